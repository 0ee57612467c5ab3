"""The fast GPU path (tpem_seg.runtime.gpu): its GPU-independent parts on the CPU, the true CUDA
run where a GPU is present.

On the CPU, the same GpuStitchRun steps run synchronously (stand-in events, no pinned memory), so
the slot ring, prefetch, skipping, cropping and out-of-memory handling are all exercised here.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tpem_seg import Segmenter  # noqa: E402
from tpem_seg.errors import BackendUnavailable  # noqa: E402
from tpem_seg.runtime import gpu  # noqa: E402
from tpem_seg.runtime.backends.torch_backend import TorchBackend  # noqa: E402
from tpem_seg.runtime.pipeline import make_plan  # noqa: E402
from tpem_seg.runtime.arrays_torch import TorchOps  # noqa: E402
from tpem_seg.runtime.outputs import OutputHead  # noqa: E402
from tpem_seg.runtime.stitch import Stitcher  # noqa: E402
from tpem_seg.runtime.tiling import gaussian_weights  # noqa: E402

CUDA = torch.cuda.is_available()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FakeOOM(RuntimeError):
    pass


def _stitch_both(rng, shape=(40, 30, 50), tile=(16, 16, 16), k=3):
    """Feed the same tiles (some constant) to the stitcher on numpy and on torch; both outputs, in order."""
    plan = make_plan(shape, tile, 0.25)
    weights = gaussian_weights(tile)
    ours, theirs = Stitcher(k, plan.padded, tile, weights), Stitcher(k, plan.padded, tile, weights, TorchOps("cpu"))
    out_np, out_t = [], []
    for i, z in enumerate(plan.z_starts):
        origins = [(z, y, x) for y, x in plan.yx_origins]
        logits = rng.standard_normal((len(origins), k, *tile)).astype(np.float32)
        ours.add(logits[1:], origins[1:])
        theirs.add(torch.from_numpy(logits[1:]), origins[1:])
        ours.add_constant([10.0, 0.0, -2.0], origins[:1])
        theirs.add_constant([10.0, 0.0, -2.0], origins[:1])
        next_z = plan.z_starts[i + 1] if i + 1 < len(plan.z_starts) else plan.padded[0]
        a, b = ours.advance_raw(next_z), theirs.advance_raw(next_z)
        assert (a is None) == (b is None)
        if a is not None:
            assert a[0] == b[0]
            out_np.append(a[1:])
            out_t.append((b[1].numpy(), b[2].numpy()))
    return out_np, out_t


def test_stitcher_on_torch_equals_stitcher_on_numpy(rng):
    out_np, out_t = _stitch_both(rng)
    assert sum(s.shape[1] for s, _ in out_np) == 40
    for (s_np, n_np), (s_t, n_t) in zip(out_np, out_t):
        np.testing.assert_allclose(s_t, s_np, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(n_t, n_np, rtol=1e-6)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("output", ["labels", "probabilities", "logits"])
def test_output_head_on_torch_equals_numpy(rng, activation, output):
    sums = rng.standard_normal((3, 4, 8, 9)).astype(np.float32)
    norm = rng.uniform(0.5, 2.0, (4, 8, 9)).astype(np.float32)
    head = OutputHead(activation, output)
    expected = head.from_sums(sums.copy(), norm)
    got = head.from_sums(torch.from_numpy(sums), torch.from_numpy(norm), TorchOps("cpu")).numpy()
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if output == "labels":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), rtol=2e-3, atol=1e-3)


def test_oom_backoff_halves_and_goes_on():
    calls = []

    def forward(chunk):
        calls.append(len(chunk))
        if len(chunk) > 2:
            raise FakeOOM("CUDA out of memory (fake)")
        return chunk * 2

    released = []
    backoff = gpu.OomBackoff(8, is_oom=lambda e: isinstance(e, FakeOOM), release=lambda: released.append(1))
    tiles = np.arange(11)
    out = np.concatenate(backoff(forward, tiles))
    np.testing.assert_array_equal(out, tiles * 2)
    assert backoff.batch_size == 2 and backoff.halvings == 2 and len(released) == 2
    assert calls[:3] == [8, 4, 2]
    assert backoff(forward, tiles[:3]) and calls[-2:] == [2, 1]  # the smaller size is kept


def test_oom_backoff_raises_other_errors_and_oom_at_batch_one():
    def broken(chunk):
        raise ValueError("not an OOM")

    with pytest.raises(ValueError):
        gpu.OomBackoff(4, is_oom=lambda e: isinstance(e, FakeOOM))(broken, np.arange(4))

    def always_oom(chunk):
        raise FakeOOM("out of memory")

    backoff = gpu.OomBackoff(4, is_oom=lambda e: isinstance(e, FakeOOM), release=lambda: None)
    with pytest.raises(FakeOOM):
        backoff(always_oom, np.arange(4))
    assert backoff.batch_size == 1


def test_is_cuda_oom_and_choose_batch_size():
    assert gpu.is_cuda_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert gpu.is_cuda_oom(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not gpu.is_cuda_oom(RuntimeError("shape mismatch"))
    gib = 2**30
    assert gpu.choose_batch_size(10 * gib, gib) == 8  # 80% of 10 GiB at 1 GiB per tile
    assert gpu.choose_batch_size(10 * gib, gib, fixed_bytes=4 * gib) == 4
    assert gpu.choose_batch_size(gib, 2 * gib) == 1  # never below one
    assert gpu.choose_batch_size(100 * gib, gib, cap=6) == 6


class CpuTensorBackend(TorchBackend):
    """The torch backend on the CPU, claiming device tensors so the Segmenter takes the GPU path;
    optionally failing with a fake out-of-memory above ``oom_above`` tiles per call."""

    def __init__(self, *args, oom_above=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.oom_above = oom_above
        self.sizes = []

    @property
    def supports_device_tensors(self):
        return True

    def infer_tensor(self, x):
        self.sizes.append(x.shape[0])
        if self.oom_above is not None and x.shape[0] > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return super().infer_tensor(x)


@pytest.mark.parametrize("output", ["labels", "logits"])
def test_gpu_path_on_cpu_equals_numpy_path(package_2ch, output):
    volume = np.random.default_rng(7).integers(0, 4000, (2, 30, 45, 70), dtype=np.uint16)
    with Segmenter(package_2ch, backend="torch", device="cpu", output=output, batch_size=4) as plain:
        expected = plain.segment(volume, axes="CZYX")
    backend = CpuTensorBackend(package_2ch, device="cpu")
    with Segmenter(package_2ch, backend=backend, output=output, batch_size=4) as seg:
        got = seg.segment(volume, axes="CZYX")
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert max(backend.sizes) == 4 and seg.last_summary.extra["batch_size"] == 4
    if output == "labels":
        assert np.mean(got == expected) > 0.9999
    else:
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_gpu_path_halves_the_batch_on_out_of_memory_and_finishes(package_2ch):
    volume = np.random.default_rng(8).random((2, 16, 64, 64), dtype=np.float32)
    with Segmenter(package_2ch, backend="torch", device="cpu", output="logits", batch_size=8) as plain:
        expected = plain.segment(volume, axes="CZYX")
    backend = CpuTensorBackend(package_2ch, device="cpu", oom_above=2)
    with Segmenter(package_2ch, backend=backend, output="logits", batch_size=8) as seg:
        got = seg.segment(volume, axes="CZYX")
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert backend.sizes[:3] == [8, 4, 2] and set(backend.sizes[3:]) <= {1, 2}
    assert seg.last_summary.extra["batch_size"] == 2


def test_gpu_path_skips_empty_tiles_like_the_numpy_path(package_2ch):
    volume = np.zeros((2, 16, 64, 96), dtype=np.float32)
    volume[:, 4:12, 10:30, 10:30] = np.random.default_rng(9).random((2, 8, 20, 20))
    kwargs = dict(output="logits", batch_size=3, skip_empty=True)
    with Segmenter(package_2ch, backend="torch", device="cpu", **kwargs) as plain:
        expected = plain.segment(volume, axes="CZYX")
        skipped = plain.last_summary.extra["skipped_tiles"]
    backend = CpuTensorBackend(package_2ch, device="cpu")
    with Segmenter(package_2ch, backend=backend, **kwargs) as seg:
        got = seg.segment(volume, axes="CZYX")
    assert skipped > 0 and seg.last_summary.extra["skipped_tiles"] == skipped
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_torch_backend_options_on_cpu(package_2ch):
    """channels-last and a static batch give the eager fp32 result."""
    batch = np.random.default_rng(10).random((3, 2, *package_2ch.manifest.tile), dtype=np.float32)
    with TorchBackend(package_2ch, device="cpu") as plain:
        expected = plain.infer(batch)
    with TorchBackend(package_2ch, device="cpu", channels_last=True, static_batch=4) as backend:
        got = backend.infer(batch)
        assert "channels-last" in backend.describe()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_torch_bf16_cast_weights_on_cpu(package_2ch):
    """bf16 weights (instead of autocast) stay close to fp32, within bf16's precision, and keep the labels."""
    batch = np.random.default_rng(12).random((2, 2, *package_2ch.manifest.tile), dtype=np.float32)
    with TorchBackend(package_2ch, device="cpu") as plain:
        expected = plain.infer(batch)
    with TorchBackend(package_2ch, device="cpu", precision="bf16", cast_weights=True, channels_last=True) as cast:
        got = cast.infer(batch)
        assert "weights cast" in cast.describe() and got.dtype == np.float32
    assert np.abs(got - expected).max() < 0.1 * np.abs(expected).max()
    assert (got.argmax(1) == expected.argmax(1)).mean() > 0.95
    with pytest.raises(BackendUnavailable, match="cast_weights needs"):
        TorchBackend(package_2ch, device="cpu", precision="fp32", cast_weights=True)


def test_torch_cpu_bf16_batch(package_2ch):
    """bf16 on a CPU takes more small tiles per call (the Segmenter uses the backend's batch size);
    fp32 keeps 2."""
    bf16 = TorchBackend(package_2ch, device="cpu", precision="bf16")
    assert not bf16.channels_last and not bf16.cast_weights  # autocast unless asked otherwise
    assert bf16.default_batch_size() == 8  # 16x32x32 tiles: 8 is the cap
    assert TorchBackend(package_2ch, device="cpu").default_batch_size() == 2
    volume = np.random.default_rng(13).random((2, 20, 40, 40), dtype=np.float32)
    seg = Segmenter(package_2ch, backend=bf16, progress=False)
    seg.segment(volume, axes="CZYX")
    assert seg.last_summary.extra["batch_size"] == 8


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU: the true GPU path (pinned buffers, copy stream, "
                                     "events, auto batch from free memory) runs only there")
@pytest.mark.parametrize("output", ["labels", "probabilities"])
def test_true_cuda_path_equals_cpu(package_2ch, output):
    volume = np.random.default_rng(11).integers(0, 4000, (2, 40, 90, 70), dtype=np.uint16)
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu", output=output) as ref:
        expected = ref.segment(volume, axes="CZYX")
    with Segmenter(package_2ch, backend="torch", device="cuda", output=output) as seg:
        got = seg.segment(volume, axes="CZYX")
        assert seg.last_summary.extra["batch_size"] >= 1
    if output == "labels":
        assert np.mean(got == expected) > 0.999
    else:
        np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), atol=2e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU: fp16 autocast, torch.compile and CUDA graphs")
def test_true_cuda_fp16_compiled_graphs_agree(package_2ch):
    volume = np.random.default_rng(12).integers(0, 4000, (2, 20, 64, 64), dtype=np.uint16)
    with Segmenter(package_2ch, backend="torch", device="cuda") as ref:
        expected = ref.segment(volume, axes="CZYX")
    backend = TorchBackend(package_2ch, device="cuda", precision="fp16", compile=True, cuda_graphs=True,
                           static_batch=4)
    with Segmenter(package_2ch, backend=backend, batch_size=4) as seg:
        got = seg.segment(volume, axes="CZYX")
    assert np.mean(got == expected) > 0.99


def test_gpu_path_runs_blocks_like_one_pass(package_2ch):
    """Blocks feed the same loop on the GPU path: equal, bit for bit, to the GPU path in one pass."""
    volume = np.random.default_rng(10).integers(0, 4000, (2, 20, 45, 70), dtype=np.uint16)
    with Segmenter(package_2ch, backend=CpuTensorBackend(package_2ch, device="cpu"), output="logits",
                   batch_size=3, block="off") as seg:
        expected = seg.segment(volume, axes="CZYX")
    with Segmenter(package_2ch, backend=CpuTensorBackend(package_2ch, device="cpu"), output="logits",
                   batch_size=3, block=(8, 24, 40)) as seg:
        got = seg.segment(volume, axes="CZYX")
        assert seg.last_summary.extra["blocks"] == 3 * 2 * 2
    np.testing.assert_array_equal(got, expected)
