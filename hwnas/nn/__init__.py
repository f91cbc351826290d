"""Networks: blocks and ``Arch -> torch.nn.Module`` (no ONNX Runtime here)."""
from hwnas.nn.blocks import ChannelShuffle, ConvBNAct, MBConv, SplitAttention, SqueezeExcite, build_layer
from hwnas.nn.model import Network, build_model

__all__ = [
    "ChannelShuffle", "ConvBNAct", "MBConv", "Network", "SplitAttention", "SqueezeExcite",
    "build_layer", "build_model",
]
