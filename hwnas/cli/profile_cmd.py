"""``hwnas profile``: measure real latencies of sampled archs into a SQLite store."""
from __future__ import annotations

import click

from hwnas.cli._common import console, echo_json, json_option
from hwnas.cli._progress import CampaignBar
from hwnas.profiling.canary import CALIBRATION_GAP_S, CALIBRATION_SESSIONS
from hwnas.profiling.providers import EPS

DEFAULT_MAX_ARCHS = 2000  # --until: the cap on the archs stored for the device


@click.command("profile")
@click.option("--space", default="tiny", show_default=True, help="Search space name.")
@click.option("--num-archs", "-n", type=int, default=100, show_default=True,
              help="New archs to measure (an interrupted run with the same options resumes instead); "
                   "with --until, the new archs per round.")
@click.option("--db", required=True, type=click.Path(dir_okay=False), help="SQLite latency database.")
@click.option("--ep", type=click.Choice(list(EPS)), default="cpu", show_default=True,
              help="ONNX Runtime execution provider.")
@click.option("--trt-cache", type=click.Path(file_okay=False), default=None,
              help="TensorRT engine cache directory [default: ~/.cache/hwnas/trt].")
@click.option("--allow-fallback", is_flag=True, help="If the GPU provider cannot load, measure on CPU (recorded).")
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--resolution", type=int, default=None, help="Input resolution (default: the space's first).")
@click.option("--threads", type=int, default=1, show_default=True, help="intra_op_num_threads.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Warm-up runs (discarded).")
@click.option("--runs", type=int, default=None, help="Timed runs per arch [default: 50].")
@click.option("--time-budget", type=float, default=None, help="Seconds of timed runs per arch (instead of --runs).")
@click.option("--canary", "canary_arch", default=None, metavar="ARCH",
              help="Time every arch against this arch of the space [default: the stored canary of this device, "
                   "else the median-FLOPs arch of a seeded sample].")
@click.option("--no-canary", is_flag=True,
              help="Plain timing, no canary (marked 'plain' in the fingerprint; drifts with the machine's speed).")
@click.option("--calibration-sessions", type=click.IntRange(min=1), default=CALIBRATION_SESSIONS,
              show_default=True, help="Canary sessions of the calibration block (first campaign of a device only).")
@click.option("--calibration-gap", type=click.FloatRange(min=0), default=CALIBRATION_GAP_S, show_default=True,
              help="Seconds between the calibration block's sessions (spread over the host's speed phases).")
@click.option("--repeats", type=click.IntRange(min=1), default=None,
              help="Fresh sessions per arch, spread in time [default: 1 with the canary (the median ratio is "
                   "kept), 3 with --no-canary (the lowest session median is kept)].")
@click.option("--chunk", type=click.IntRange(min=1), default=16, show_default=True,
              help="Archs measured round-robin, so an arch's --repeats sessions are one round apart.")
@click.option("--sampler", type=click.Choice(["stratified", "uniform"]), default="stratified", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ray", "ray_address", default=None, metavar="auto|local|HOST:PORT",
              help="Run measurements as Ray tasks (auto: the running cluster, else a local one); an address "
                   "that does not answer is an error within seconds.")
@click.option("--ray-resource", "ray_resource", default=None, metavar="NAME",
              help="With --ray: a fleet. Measure on every worker that advertises the custom resource NAME "
                   "(ray start --resources '{\"NAME\": 1}'), each device fingerprinted and its canary calibrated "
                   "on itself; one dataset per device in DB. NAME's count on a worker = measurements it runs at once.")
@click.option("--layers", is_flag=True, help="Also measure every (layer, op, input channels) alone (lookup table).")
@click.option("--active", is_flag=True, help="Pick archs the predictor is least sure of (needs --predictor).")
@click.option("--predictor", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Saved predictor for --active.")
@click.option("--until", "until_spec", default=None, metavar="METRIC=TARGET",
              help="Measure rounds of -n new archs until the predictor's 5-fold CV metric meets TARGET: "
                   "within10=0.95, within5=0.9, tau=0.9 (lower bounds) or mape=0.05 (an upper bound); "
                   "stops early when the learning curve levels off short of it.")
@click.option("--max-archs", type=int, default=None,
              help="With --until: stop once this many archs are stored for the device [default: 2000].")
@click.option("--until-model", default=None,
              help="With --until: the predictor that judges each round (a registered predictor: ridge, xgb, "
                   "mlp, ...) [default: xgb].")
@json_option
def profile(space, num_archs, db, ep, trt_cache, allow_fallback, batch_size, resolution, threads, warmup, runs, time_budget,
            canary_arch, no_canary, calibration_sessions, calibration_gap, repeats, chunk, sampler, seed, ray_address,
            ray_resource, layers, active, predictor, until_spec, max_archs, until_model, as_json):
    """Measure ONNX Runtime latency of NUM_ARCHS new archs of SPACE into DB.

    \b
    Each arch: build -> ONNX -> a fresh session whose timed runs alternate with the runs of
    the canary (one fixed arch of the space, its session open for the whole campaign) ->
    one committed row: latency_ms = (arch / canary ratio) x the device's canary reference,
    with the raw statistics of both kept.  The reference is calibrated once, at the first
    campaign of this device (a block of short canary sessions, ~20 s), and reused by later
    campaigns, so data from different days agree.  Ctrl-C stops after the current session;
    the same command resumes.

    \b
    With --until METRIC=TARGET the campaign runs in rounds of NUM_ARCHS new archs; after each
    round the --until-model predictor is cross-validated on everything stored for the device,
    and the run stops when TARGET is met, when a power-law learning curve fitted to the
    rounds levels off short of it, or at --max-archs.  The same command resumes it.

    \b
    A fleet (--ray HEAD:PORT --ray-resource NAME): every worker advertising NAME measures
    the campaign on its own device, rows stored under that worker's fingerprint and scaled
    by that device's own canary reference; the same command resumes every device.
      ray start --head --port 6379                                   # the driver's machine
      ray start --address HEAD:6379 --resources '{"jetson_orin": 1}' # each device
      hwnas profile --db fleet.db -n 200 --ray HEAD:6379 --ray-resource jetson_orin
    """
    from hwnas.profiling.campaign import CampaignConfig
    from hwnas.profiling.store import LatencyStore

    if runs is not None and time_budget is not None:
        raise click.UsageError("give --runs or --time-budget, not both")
    if active and predictor is None:
        raise click.UsageError("--active needs --predictor FILE")
    if runs is None and time_budget is None:
        runs = 50
    target = _check_until(until_spec, max_archs, until_model, num_archs)  # before the db is opened
    _check_ray(ray_address, ray_resource, until_spec, layers)
    cfg = CampaignConfig(space=space, num_archs=num_archs, ep=ep, allow_fallback=allow_fallback,
                         batch_size=batch_size, resolution=resolution, threads=threads, warmup=warmup,
                         runs=runs, time_budget_s=time_budget, repeats=repeats, chunk=chunk, sampler=sampler, seed=seed,
                         active_predictor=predictor if active else None, trt_cache_dir=trt_cache,
                         canary=not no_canary, canary_arch=canary_arch, calibration_sessions=calibration_sessions,
                         calibration_gap_s=calibration_gap)
    if ray_resource is not None:
        return _fleet(db, cfg, ray_address, ray_resource, as_json)
    if ray_address is not None:  # an unreachable cluster fails now, before the db is created
        from hwnas.ray_cluster import connect

        connect(ray_address)
    store = LatencyStore(db)
    try:
        layer_rows = _run_layers(store, cfg, as_json) if layers else None
        if target is None:
            res, until = _run(store, cfg, ray_address, as_json), None
        else:
            res, until = _run_until(store, cfg, target, until_model or "xgb", max_archs or DEFAULT_MAX_ARCHS,
                                    ray_address, as_json)
    finally:
        store.close()
    _report(res, cfg, db, layer_rows, as_json, until)


def _check_until(until_spec, max_archs, until_model, num_archs):
    """The parsed --until target (None without it); every --until option checked up front."""
    if until_spec is None:
        given = [name for name, v in (("--max-archs", max_archs), ("--until-model", until_model)) if v is not None]
        if given:
            raise click.UsageError(f"{' and '.join(given)} only apply with --until METRIC=TARGET")
        return None
    from hwnas.predictors import predictor_class
    from hwnas.profiling.until import parse_until

    target = parse_until(until_spec)
    predictor_class(until_model or "xgb")
    if max_archs is not None and max_archs < 1:
        raise click.UsageError(f"--max-archs must be >= 1, got {max_archs}")
    if num_archs < 1:
        raise click.UsageError(f"with --until, -n/--num-archs is the round size and must be >= 1, got {num_archs}")
    return target


def _check_ray(ray_address, ray_resource, until_spec, layers):
    if ray_resource is None:
        return
    if ray_address is None:
        raise click.UsageError("--ray-resource NAME runs a fleet on a Ray cluster: give --ray auto|HOST:PORT too")
    if until_spec is not None or layers:
        raise click.UsageError("--ray-resource runs one campaign per device; --until and --layers are not "
                               "supported on a fleet (run them on one device)")


def _fleet(db, cfg, ray_address, ray_resource, as_json):
    """``--ray ADDRESS --ray-resource NAME``: one campaign per device of the fleet."""
    from hwnas.profiling.campaign import check_config
    from hwnas.profiling.fleet import connect_fleet, run_fleet
    from hwnas.profiling.store import LatencyStore

    check_config(cfg)
    connect_fleet(ray_address, ray_resource)  # before the db is created: no cluster, no such resource
    store = LatencyStore(db)
    try:
        if as_json:
            out = run_fleet(store, cfg, address=ray_address, resource=ray_resource)
        else:
            with CampaignBar(None, label=f"archs on {ray_resource}") as bar:
                out = run_fleet(store, cfg, address=ray_address, resource=ray_resource,
                                on_row=_FleetRows(bar, cfg).row)
    finally:
        store.close()
    _fleet_report(out, cfg, db, as_json)


class _FleetRows:
    """The bar of a fleet: every device's rows in one count."""

    def __init__(self, bar, cfg):
        self.bar, self.cfg, self.seen = bar, cfg, {}

    def row(self, row, res):
        from types import SimpleNamespace

        self.seen[res.device_id] = res
        total = SimpleNamespace(planned=sum(r.planned for r in self.seen.values()),
                                skipped=sum(r.skipped for r in self.seen.values()), canary=res.canary)
        self.bar.row(row, total)


def _fleet_report(out, cfg, db, as_json):
    import shlex
    import sys

    devices = []
    for d in out.devices:
        s = _summary(d.result, cfg, db)
        s.update(hosts=d.hostnames, ray_nodes=d.nodes, lost=d.lost)
        devices.append(s)
    resume = "hwnas " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if as_json:
        echo_json({"resource": out.resource, "devices": devices, "measured": out.measured,
                   "interrupted": out.interrupted, "wall_s": round(out.wall_s, 3), "db": str(db),
                   "resume_command": resume if out.interrupted else None})
    else:
        for d, s in zip(out.devices, devices):
            _table(s, cfg, d.result)
        click.echo(f"{len(out.devices)} device(s) with resource {out.resource!r}: {out.measured} rows written to {db}")
    if out.interrupted or any(d.lost for d in out.devices):
        click.echo(f"stopped early; resume with the same command:\n  {resume}", err=True)
        sys.exit(130)


def _run(store, cfg, ray_address, as_json):
    from hwnas.profiling.campaign import run_campaign

    if as_json:
        return run_campaign(store, cfg, ray_address=ray_address)
    with CampaignBar(cfg.num_archs) as bar:
        return run_campaign(store, cfg, ray_address=ray_address, on_row=bar.row, on_calibrate=bar.calibrate)


def _run_until(store, cfg, target, model, max_archs, ray_address, as_json):
    """(the rounds' campaigns as one result, the ``UntilResult``); one line per round."""
    from hwnas.profiling.until import FOLDS, merge_results, run_until

    def on_round(r, out):
        if as_json:
            return
        value = "too few archs to judge" if r.value is None else f"{target.metric} = {r.value:.4g}"
        click.echo(f"round {len(out.rounds)}: {r.n} archs ({r.new} new), {value} ({model}, {FOLDS}-fold CV)")
        f = out.forecast
        if f is not None:
            need = f.needed(target.target_error)
            click.echo(f"  forecast: error(n) = {f.a:.3g} n^-{f.b:.3g} + {f.c:.3g}, levels off at "
                       f"{target.metric} ~ {target.value(f.c):.4g}; "
                       + (f"{target} at ~{need} archs" if need != float("inf") else f"never {target}"))

    out = run_until(store, cfg, target, model=model, max_archs=max_archs,
                    run_round=lambda c: _run(store, c, ray_address, as_json), on_round=on_round)
    return merge_results(out.campaigns, out.device_id), out


def _run_layers(store, cfg, as_json):
    from hwnas.profiling.layers import profile_layers

    if as_json:
        return profile_layers(store, cfg)
    with CampaignBar(None, label="layers") as bar:
        return profile_layers(store, cfg, on_row=bar.layer)


def _summary(res, cfg, db) -> dict:
    """The numbers of one device's campaign, for the table and --json."""
    out = {"campaign": res.campaign_id, "device_id": res.device_id, "planned": res.planned,
           "measured": res.measured, "errors": res.errors, "skipped_already_stored": res.skipped,
           "resumed": res.resumed, "interrupted": res.interrupted, "wall_s": round(res.wall_s, 3),
           "archs_per_min": round(60 * res.measured / res.wall_s, 2) if res.wall_s else None,
           "overhead_share": round(res.overhead_share, 4), "db": str(db)}
    ok = [r["latency_ms"] for r in res.rows if r["status"] == "ok"]
    if ok:
        out.update(min_ms=min(ok), median_latency_ms=sorted(ok)[len(ok) // 2], max_ms=max(ok))
    out["protocol"] = cfg.protocol
    if res.canary:
        out.update(canary=res.canary["arch"], canary_reference_ms=res.canary["reference_ms"],
                   canary_state_constant=res.canary["gamma"])
    if res.speed_range:
        out.update(speed_factor_min=res.speed_range[0], speed_factor_max=res.speed_range[1])
    if res.steal_share is not None:
        out["cpu_steal_share"] = round(res.steal_share, 4)
    return out


def _report(res, cfg, db, layer_rows, as_json, until=None):
    import shlex
    import sys

    out = _summary(res, cfg, db)
    if layer_rows is not None:
        out["layer_rows_written"] = layer_rows
    if until is not None:
        out["until"] = until.to_dict()
    resume = "hwnas " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if as_json:
        out["resume_command"] = resume if res.interrupted else None
        echo_json(out)
    else:
        _table(out, cfg, res)
        if until is not None:
            _until_table(until)
    if res.interrupted:
        click.echo(f"stopped early; {res.planned - res.skipped - res.measured} archs left. "
                   f"Resume with the same command:\n  {resume}", err=True)
        sys.exit(130)


def _table(out, cfg, res):
    """The final table."""
    from rich.table import Table

    t = Table(title=f"hwnas profile: {cfg.space} on {res.device_id}")
    t.add_column("what")
    t.add_column("value", justify="right")
    for k, v in out.items():
        if k == "until":
            continue
        t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console().print(t)


def _until_table(until):
    """The rounds of ``--until`` and how it stopped."""
    from rich.table import Table

    from hwnas.profiling.until import FOLDS

    t = Table(title=f"until {until.target}")
    t.add_column("round", justify="right")
    t.add_column("archs", justify="right")
    t.add_column("new", justify="right")
    t.add_column(f"{until.target.metric} ({until.model}, {FOLDS}-fold CV)", justify="right")
    for i, r in enumerate(until.rounds, 1):
        t.add_row(str(i), str(r.n), str(r.new), "-" if r.value is None else f"{r.value:.4g}")
    console().print(t)
    click.echo(until.message)
