"""Profiling: real latency of architectures with ONNX Runtime (imported as ``hwnas.profiling``).

convert -> measure -> record, each in its own module:

- ``onnx_graph``   ``Arch`` -> ONNX graph (random weights, fixed input shape)
- ``providers``    which execution provider can really run here; sessions with explicit options
- ``runner``       ``measure(model, ep=..., threads=...) -> Measurement`` (warm-up, timed runs)
- ``stats``        median / mean / std / p10 / p90 of the timed runs; arch/canary ratio estimators
- ``canary``       the canary of a context (rule, ONNX hash) and its reference calibration
- ``paired``       ``PairedTimer``: each arch's runs alternated with the canary's -> ratio
- ``protocol``     the same protocol for export, evaluate and benchmarks; drift checks
- ``drift``        the machine's speed over time (canary median / reference)
- ``fingerprint``  ``device_fingerprint()``: everything that could change a number
- ``store``        ``LatencyStore`` (SQLite, WAL) and ``LatencyDataset``
- ``sampling``     ``uniform`` and ``stratified`` (over the FLOPs range) arch samplers
- ``campaign``     ``run_campaign``: sample, measure, one committed row per arch, resumable
- ``distributed``  the same measurements as Ray tasks, streamed to the one writer
- ``layers``       per-layer lookup table (``hwnas profile --layers``)
- ``active``       ``--active``: archs the predictor is least sure of
- ``transfer``     CSV / Parquet export, CSV import

Nothing is imported here, so ``import hwnas.profiling.onnx_graph`` stays light.
"""
