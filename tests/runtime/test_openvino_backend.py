"""OpenVINO's own work: the decomposed instance norms of an exported graph folded into MVN.

The oracle is OpenVINO itself on the unchanged graph (fp32, same tiles), and ONNX Runtime on
the package's ONNX for what the backend returns.
"""

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'tpem-seg[openvino]')")

from openvino import opset13 as ops  # noqa: E402

from tpem_seg.runtime.backends import create_backend  # noqa: E402
from tpem_seg.runtime.backends.openvino_backend import fuse_instance_norms  # noqa: E402


def op_types(model) -> list[str]:
    return [node.get_type_name() for node in model.get_ordered_ops()]


def run_fp32(model, x: np.ndarray) -> np.ndarray:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    return compiled({0: x})[0]


def test_exported_instance_norms_become_mvn(package_2ch):
    """Every ReduceMean of the exported UNETR belongs to an instance norm (the ViT's norms are
    LayerNormalization, which OpenVINO reads as MVN already): after fusion none is left, one more
    MVN stands for each, and the network computes the same logits."""
    core = ov.Core()
    plain = core.read_model(str(package_2ch.onnx_path))
    fused_model = core.read_model(str(package_2ch.onnx_path))
    reductions, mvns = op_types(plain).count("ReduceMean"), op_types(plain).count("MVN")
    fused = fuse_instance_norms(fused_model)
    assert fused > 0 and reductions == 6 * fused  # three per statistic, two statistics per norm
    assert "ReduceMean" not in op_types(fused_model)
    assert op_types(fused_model).count("MVN") == mvns + fused
    x = np.random.default_rng(0).random((2, package_2ch.manifest.config.in_channels, *package_2ch.manifest.tile),
                                        dtype=np.float32)
    np.testing.assert_allclose(run_fp32(fused_model, x), run_fp32(plain, x), atol=1e-4, rtol=1e-4)


def near_miss(axes_per_mean: list[list[int]]):
    """``(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps)`` for x ``(1, 2, 4, 4, 4)``, each mean a
    chain of ReduceMean over ``axes_per_mean``."""
    x = ops.parameter([1, 2, 4, 4, 4], np.float32)

    def mean(value):
        for axes in axes_per_mean:
            value = ops.reduce_mean(value, ops.constant(np.array(axes, np.int64)), keep_dims=True)
        return value

    centred = ops.subtract(x, mean(x))
    std = ops.sqrt(ops.add(mean(ops.multiply(centred, centred)), ops.constant(np.float32(1e-5))))
    return ov.Model([ops.divide(centred, std)], [x])


@pytest.mark.parametrize("axes, expected", [([[-1], [-2], [-3]], 1), ([[2, 3, 4]], 1),
                                            ([[-1], [-2]], 0), ([[1, 2, 3, 4]], 0)])
def test_only_spatial_statistics_are_fused(axes, expected):
    """Statistics over D, H and W are an instance norm; over fewer axes, or over the channels too, not."""
    model = near_miss(axes)
    x = np.random.default_rng(1).normal(size=(1, 2, 4, 4, 4)).astype(np.float32)
    before = run_fp32(model, x)
    assert fuse_instance_norms(model) == expected
    np.testing.assert_allclose(run_fp32(model, x), before, atol=1e-5)


def test_bf16_agrees_with_onnxruntime(package_2ch):
    """bf16 (where the CPU has it) keeps the labels of ONNX Runtime's fp32 on random tiles."""
    from tpem_seg.runtime.backends.openvino_backend import OpenVINOBackend
    from tpem_seg.runtime.compare import compare_logits

    if "bf16" not in OpenVINOBackend.precisions("cpu"):
        pytest.skip("this CPU has no native bf16")
    x = np.random.default_rng(2).random((3, package_2ch.manifest.config.in_channels, *package_2ch.manifest.tile),
                                        dtype=np.float32)
    with create_backend("openvino", package_2ch, device="cpu", precision="bf16") as low, \
            create_backend("onnxruntime", package_2ch, device="cpu") as ref:
        a = compare_logits(low.infer(x), ref.infer(x), package_2ch.manifest.classes)
    assert a.voxel_agreement > 0.99 and a.max_abs_prob_diff < 0.1, a


def test_the_run_batch_size_is_the_compiled_one(package_2ch):
    """A run's batch size reaches the backend, so OpenVINO compiles for it instead of padding each call."""
    from tpem_seg import Segmenter

    volume = np.random.default_rng(3).random((2, 16, 40, 40), dtype=np.float32)
    with Segmenter(package_2ch, backend="openvino", device="cpu", batch_size=3) as three, \
            Segmenter(package_2ch, backend="openvino", device="cpu") as default:
        assert three.backend.static_batch == 3 and default.backend.static_batch == default.backend.default_batch_size()
        labels = three.segment(volume, axes="CZYX")
        assert labels.shape == (16, 40, 40)
        assert np.mean(labels == default.segment(volume, axes="CZYX")) > 0.999
