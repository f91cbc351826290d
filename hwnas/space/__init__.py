"""Search spaces: what can be built (``SearchSpace``) and one choice of it (``Arch``)."""
from hwnas.space._ops import SKIP, Op, parse_op
from hwnas.space._registry import DATA_DIR, get_space, list_spaces, register_space, unregister_space
from hwnas.space._loader import load_space_file, space_from_dict
from hwnas.space._plan import LayerPlan, NetPlan, make_divisible, plan_arch
from hwnas.space._space import RESOLUTION, Arch, Decision, Layer, SearchSpace, Stem

__all__ = [
    "Arch", "DATA_DIR", "Decision", "Layer", "Op", "RESOLUTION", "SKIP", "SearchSpace", "Stem",
    "LayerPlan", "NetPlan", "make_divisible", "plan_arch",
    "get_space", "list_spaces", "load_space_file", "parse_op", "register_space",
    "space_from_dict", "unregister_space",
]
