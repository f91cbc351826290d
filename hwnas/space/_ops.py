"""Layer operations and their compact names (timm-style block strings).

An op name is self-describing, so a space file can list ops by name and the network,
the cost model and the ONNX builder all read the same fields.  Grammar (tokens joined
by ``_``, in this order)::

    skip
    k<kernel>_e<expansion>[_g<groups>][_w<width>][_se][_sa<radix>]

``k3_e6`` is FBNet's MBConv with a 3x3 depthwise conv and expansion 6; ``g2`` makes both
1x1 convs grouped (with a channel shuffle between, as in FBNet); ``w0.75`` scales the
layer's output channels; ``se`` adds squeeze-excitation; ``sa2`` swaps the depthwise
conv for a ResNeSt split-attention conv with radix 2.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from hwnas.errors import SpaceError

_TOKEN = re.compile(r"^(k|e|g|w|sa)(\d+(?:\.\d+)?)$|^(se)$")


@dataclass(frozen=True)
class Op:
    """One choice of one searchable layer."""

    kernel: int = 3
    expansion: float = 1.0
    groups: int = 1
    width: float = 1.0
    se: bool = False
    radix: int = 0  # 0: MBConv depthwise conv; r >= 1: split-attention with r splits
    skip: bool = False

    @property
    def name(self) -> str:
        if self.skip:
            return "skip"
        parts = [f"k{self.kernel}", f"e{_num(self.expansion)}"]
        if self.groups != 1:
            parts.append(f"g{self.groups}")
        if self.width != 1.0:
            parts.append(f"w{_num(self.width)}")
        if self.se:
            parts.append("se")
        if self.radix:
            parts.append(f"sa{self.radix}")
        return "_".join(parts)

    @property
    def block(self) -> str:
        return "skip" if self.skip else ("sa" if self.radix else "mb")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


SKIP = Op(skip=True)


def parse_op(name: str) -> Op:
    """Parse an op name; raise ``SpaceError`` naming the bad token."""
    if name == "skip":
        return SKIP
    fields: dict = {}
    for tok in str(name).split("_"):
        m = _TOKEN.match(tok)
        if not m:
            raise SpaceError(
                f"unknown op {name!r}: token {tok!r} is not one of k<int>, e<num>, g<int>, "
                "w<num>, se, sa<int> (or the whole name 'skip')"
            )
        key = m.group(1) or m.group(3)
        if key in fields:
            raise SpaceError(f"unknown op {name!r}: token {key!r} given twice")
        fields[key] = True if key == "se" else float(m.group(2))
    if "k" not in fields or "e" not in fields:
        raise SpaceError(f"unknown op {name!r}: an op needs a kernel k<int> and an expansion e<num>")
    op = Op(
        kernel=int(fields["k"]),
        expansion=float(fields["e"]),
        groups=int(fields.get("g", 1)),
        width=float(fields.get("w", 1.0)),
        se=bool(fields.get("se", False)),
        radix=int(fields.get("sa", 0)),
    )
    if op.kernel % 2 == 0 or op.kernel < 1:
        raise SpaceError(f"unknown op {name!r}: kernel must be an odd positive integer, got {op.kernel}")
    if op.expansion <= 0 or op.width <= 0 or op.groups < 1:
        raise SpaceError(f"unknown op {name!r}: expansion and width must be > 0 and groups >= 1")
    if op.radix and op.groups != 1:
        raise SpaceError(f"unknown op {name!r}: split-attention ops take no g<groups>")
    if op.name != name:
        raise SpaceError(f"op {name!r} is not in canonical form; write it as {op.name!r}")
    return op
