"""``Arch -> ONNX model`` for profiling: random weights, fixed input shape.

Why a direct builder: profiling exports thousands of models, and
``torch.onnx.export(dynamo=False)`` costs 0.1-0.7 s a model here while writing the graph
with ``onnx.helper`` from the very ``hwnas.nn`` modules costs a few ms on top of building
the module.  The graph is emitted by walking the built ``Network`` (weights read from
it, BN folded into the preceding conv, as ONNX Runtime would fold it anyway), so what is
timed is what the network computes; ``tests/profiling/test_profiling_onnx_graph.py`` runs both in
ONNX Runtime and torch and keeps them equal.  ``module_to_onnx`` (the torch exporter)
stays for arbitrary modules.
"""
from __future__ import annotations

import io
import warnings

import numpy as np

from hwnas.space import Arch, SearchSpace

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17


def arch_to_onnx(space: SearchSpace, arch: Arch | str, *, batch_size: int = 1, resolution: int | None = None,
                 opset: int = DEFAULT_OPSET, seed: int = 0, num_classes: int | None = None,
                 dynamic_batch: bool = False):
    """The ONNX ``ModelProto`` of ``arch`` with seeded random weights (input ``input``:
    NCHW float32, output ``logits``); passes ``onnx.checker``."""
    from hwnas.nn import build_model

    arch = space.parse(arch)
    res = space.resolution(arch, resolution)
    model = seeded_module(lambda: build_model(space, arch, res, num_classes), seed)
    return network_to_onnx(model, batch_size=batch_size, opset=opset, dynamic_batch=dynamic_batch)


def network_to_onnx(model, *, batch_size: int = 1, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False):
    """Emit the ONNX graph of a ``hwnas.nn.Network`` (eval-mode semantics)."""
    import onnx

    if opset < 13:
        raise ValueError(f"opset must be >= 13, got {opset}")
    g = _Graph(opset)
    plan = model.plan
    x = g.conv_bn(INPUT_NAME, model.stem, act=True)
    for layer, p in zip(model.layers, plan.layers):
        x = g.layer(x, layer, p)
    if plan.head_channels:
        x = g.conv_bn(x, model.head, act=True)
    x = g.node("GlobalAveragePool", [x])
    x = g.node("Flatten", [x], axis=1)
    fc = model.classifier
    g.node("Gemm", [x, g.const(fc.weight), g.const(fc.bias)], out=OUTPUT_NAME, transB=1)
    batch = "batch" if dynamic_batch else batch_size
    proto = g.model("hwnas", [batch, plan.in_channels, plan.resolution, plan.resolution],
                    [batch, plan.num_classes])
    onnx.checker.check_model(proto)
    return proto


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes, self.inits, self._n = [], [], 0

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, value, dtype=np.float32) -> str:
        from onnx import numpy_helper

        arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        name = self._name("w")
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr.astype(dtype)), name))
        return name

    def node(self, op: str, inputs, out: str | None = None, **attrs) -> str:
        import onnx

        out = out or self._name(op.lower())
        self.nodes.append(onnx.helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def model(self, name: str, in_shape, out_shape):
        """The ``ModelProto`` of the graph: float input ``input`` of ``in_shape``, float output
        ``logits`` of ``out_shape`` (a node must already write it)."""
        import onnx

        graph = onnx.helper.make_graph(
            self.nodes, name,
            [onnx.helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, list(in_shape))],
            [onnx.helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, list(out_shape))],
            initializer=self.inits)
        proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", self.opset)],
                                       producer_name="hwnas")
        proto.ir_version = min(proto.ir_version, 10)
        return proto

    def reduce_mean_hw(self, x: str) -> str:
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.const([2, 3], np.int64)], keepdims=1)
        return self.node("ReduceMean", [x], axes=[2, 3], keepdims=1)

    def reshape(self, x: str, shape) -> str:
        # 0 copies the batch dimension from the input, so dynamic batch works too
        return self.node("Reshape", [x, self.const([0, *shape[1:]], np.int64)])

    def conv(self, x: str, conv, weight=None, bias=None) -> str:
        w = conv.weight if weight is None else weight
        inputs = [x, self.const(w)]
        b = conv.bias if bias is None else bias
        if b is not None:
            inputs.append(self.const(b))
        k = conv.kernel_size[0]
        pad = conv.padding[0]
        return self.node("Conv", inputs, kernel_shape=[k, k], strides=list(conv.stride),
                         pads=[pad] * 4, group=conv.groups)

    def conv_bn(self, x: str, seq, act: bool) -> str:
        """A ``ConvBNAct``: conv with BN folded in, then ReLU if it has one."""
        conv, bn = seq[0], seq[1]
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        w = conv.weight * scale.reshape(-1, 1, 1, 1)
        b = bn.bias - bn.running_mean * scale
        y = self.conv(x, conv, w, b)
        return self.node("Relu", [y]) if len(seq) > 2 and act else y

    def layer(self, x: str, layer, p) -> str:
        from torch import nn

        if isinstance(layer, nn.Identity):
            return x
        if not hasattr(layer, "expand"):  # a skip projection (ConvBNAct without act)
            return self.conv_bn(x, layer, act=False)
        y = self.conv_bn(x, layer.expand, act=True)
        g = p.op.groups
        if g > 1:
            s = p.in_size
            y = self.reshape(y, [0, g, p.hidden // g, s, s])
            y = self.node("Transpose", [y], perm=[0, 2, 1, 3, 4])
            y = self.reshape(y, [0, p.hidden, s, s])
        if p.op.radix:
            y = self.split_attention(y, layer.spatial, p)
        else:
            y = self.conv_bn(y, layer.spatial, act=True)
        if p.op.se:
            s = self.reduce_mean_hw(y)
            s = self.node("Relu", [self.conv(s, layer.se.reduce)])
            s = self.node("Sigmoid", [self.conv(s, layer.se.expand)])
            y = self.node("Mul", [y, s])
        y = self.conv_bn(y, layer.project, act=False)
        return self.node("Add", [x, y]) if p.residual else y

    def split_attention(self, x: str, sa, p) -> str:
        c, r, s = p.hidden, sa.radix, p.out_size
        y = self.conv_bn(x, sa.conv, act=True)
        splits = self.reshape(y, [0, c, r, s, s])
        summed = self.node("ReduceSum", [splits, self.const([2], np.int64)], keepdims=0)
        gap = self.reduce_mean_hw(summed)
        att = self.conv(self.node("Relu", [self.conv(gap, sa.fc1)]), sa.fc2)
        att = self.reshape(att, [0, c, r, 1, 1])
        att = self.node("Softmax", [att], axis=2) if r > 1 else self.node("Sigmoid", [att])
        return self.node("ReduceSum", [self.node("Mul", [splits, att]), self.const([2], np.int64)], keepdims=0)


def module_to_onnx(model, input_shape: tuple[int, ...], *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False):
    """Export any ``nn.Module`` with the TorchScript exporter (slower; for arbitrary modules)."""
    import onnx
    import torch

    buf = io.BytesIO()
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(*input_shape),), buf, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                          do_constant_folding=True, dynamic_axes=dynamic_axes)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    return proto


def seeded_module(build, seed: int = 0):
    """``build()`` in eval mode, made under torch seed ``seed`` (the global RNG is left as it
    was) and with random BN statistics: profiling the same arch twice times the same weights."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build().eval()
        randomize_bn(model)
    return model


def randomize_bn(model) -> None:
    """Give BN layers non-trivial statistics so that parity tests catch a wrong fold."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
