"""The ONNX graph passes of export: InstanceNormalization made accurate in ONNX Runtime; opset and I/O checks."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tpem_seg.errors import TpemSegError  # noqa: E402
from tpem_seg.export.onnx import check_onnx, check_opset, decompose_instance_norm  # noqa: E402


def instance_norm_model(path, shape, opset, eps=1e-5):
    c = shape[1]
    rng = np.random.default_rng(0)
    scale, bias = rng.normal(size=c).astype(np.float32), rng.normal(size=c).astype(np.float32)
    node = helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["y"], epsilon=eps, name="node_in")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(bias, "bias")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return scale, bias


def run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("opset", [17, 18])
def test_decomposed_instance_norm_is_exact_and_accurate(tmp_path, opset):
    shape = (2, 3, 64, 64, 64)
    scale, bias = instance_norm_model(tmp_path / "m.onnx", shape, opset, eps=1e-3)
    x = (np.random.default_rng(1).normal(size=shape) * 0.1 + 5.0).astype(np.float32)
    assert decompose_instance_norm(tmp_path / "m.onnx") == 1
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert "InstanceNormalization" not in {n.op_type for n in model.graph.node}
    assert all(n.name.startswith("node_in/instance_norm/") for n in model.graph.node)
    xd = x.astype(np.float64)
    mean, var = xd.mean(axis=(2, 3, 4), keepdims=True), xd.var(axis=(2, 3, 4), keepdims=True)
    expected = (xd - mean) / np.sqrt(var + 1e-3) * scale[None, :, None, None, None] + bias[None, :, None, None, None]
    assert np.abs(run(tmp_path / "m.onnx", x) - expected).max() < 2e-5


def test_other_ranks_are_left_alone(tmp_path):
    instance_norm_model(tmp_path / "m2d.onnx", (1, 3, 8, 8), 18)
    assert decompose_instance_norm(tmp_path / "m2d.onnx") == 0


def test_opset_and_io_contract(tmp_path):
    assert check_opset(17) == 17
    with pytest.raises(TpemSegError, match="opset 17\\+"):
        check_opset(16)
    instance_norm_model(tmp_path / "m.onnx", (1, 2, 16, 16, 16), 18)
    with pytest.raises(TpemSegError, match="unexpected tensor 'x'"):
        check_onnx(tmp_path / "m.onnx", 2, 2, (16, 16, 16))
