"""The benchmark runs every configuration available here on a tiny model, and its agreement
figures catch a backend that computes something else. No wall-clock assertions: only that every
figure is there and consistent."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from tpem_seg.errors import InputError  # noqa: E402
from tpem_seg.runtime import bench as B  # noqa: E402
from tpem_seg.runtime.backends import BackendSpec  # noqa: E402
from tpem_seg.runtime.backends.ort_backend import OnnxRuntimeBackend  # noqa: E402

#: Quick matmul peaks and one repeat of everything: the figures, not their accuracy, are tested.
SETTINGS = B.BenchSettings(repeats=1, network_repeats=1, warmup=1, peak_size=128, peak_repeats=1,
                           peak_min_seconds=0.01, calibration_tiles=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class PerturbedBackend(OnnxRuntimeBackend):
    """A deliberately wrong backend: ONNX Runtime's logits with class 1 pushed up by 3."""

    def _infer(self, batch):
        logits = super()._infer(batch).copy()
        logits[:, 1] += 3.0
        return logits


@pytest.fixture(scope="module")
def report(package_2ch, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bench")
    volume, info = B.load_input("synthetic:16,32,40", 2, seed=1)
    configs = B.default_configs("cpu", ["torch", "onnxruntime", "tensorrt"], ["fp32", "fp16", "bf16", "int8"])
    calibration = B.plan_tiles_for(volume, package_2ch, SETTINGS)[:1]
    runners = B.make_runners(package_2ch, configs, SETTINGS, "cpu", workdir, calibration)
    faulty = B.BenchConfig("onnxruntime", "fp32", "cpu", label="perturbed")
    runners.append(B.SegmenterRunner(package_2ch, faulty, SETTINGS, backend=PerturbedBackend(package_2ch)))
    lines = []
    return B.run_bench(volume, package_2ch, runners, SETTINGS, command="pytest", input_info=info,
                       progress=lines.append)


def test_every_available_configuration_runs(report):
    names = [r.name for r in report.records]
    assert names[0] == "baseline"
    assert {"torch-fp32", "torch-bf16", "onnxruntime-fp32", "onnxruntime-int8", "tensorrt-fp32"} <= set(names)
    assert "torch-fp16" not in names  # no fp16 torch on a CPU: not offered
    for r in report.records:
        if r.config.backend == "tensorrt":
            assert r.status == "skipped" and "GPU" in r.reason
            continue
        assert r.status == "ok", (r.name, r.reason)
        assert r.tiles == 2 and r.voxels == 16 * 32 * 40
        assert len(r.end_to_end.samples) == 1 and len(r.network.samples) == 1
        for figure in (r.voxels_per_s, r.speedup, r.network_tiles_per_s, r.pipeline_efficiency,
                       r.achieved_flops, r.fraction_of_peak, r.peak_rss_mb):
            assert figure is not None and figure > 0, r.name
        assert r.achieved_flops == pytest.approx(report.flops_per_tile * r.tiles / r.network.median)
        assert r.fraction_of_peak == pytest.approx(r.achieved_flops / report.matmul_peaks[r.config.precision])
    assert report.record("baseline").speedup == pytest.approx(1.0)
    assert report.record("baseline").agreement is None
    assert set(report.matmul_peaks) == {"fp32", "bf16", "int8"}
    assert report.machine["cores"] >= 1 and report.machine["versions"]["numpy"]


def test_correct_backends_agree_with_the_baseline(report):
    for name in ("torch-fp32", "onnxruntime-fp32"):
        a = report.record(name).agreement
        assert report.record(name).agrees and a.voxel_agreement > 0.999 and a.max_abs_prob_diff < 1e-3, (name, a)
    assert report.record("torch-bf16").agreement.max_abs_prob_diff > 0  # reduced precision is not bit-exact


def test_no_resampling_whatever_the_voxel_size(package_1ch):
    """The configurations run on the voxels the baseline sees, even when the input's voxel size
    differs from the package's (the Segmenter would otherwise resample to it)."""
    volume, info = B.load_input("synthetic:16,32,40", 1, seed=3)
    volume.spacing = (5.0, 2.0, 2.0)  # the package's is (5, 1, 1)
    runners = B.make_runners(package_1ch, [B.BenchConfig("torch", "fp32")], SETTINGS, "cpu")
    report = B.run_bench(volume, package_1ch, runners, SETTINGS, command="pytest", input_info=info,
                         progress=lambda line: None)
    a = report.record("torch-fp32").agreement
    assert a.voxel_agreement > 0.999 and a.max_abs_prob_diff < 1e-3, a


def test_agreement_catches_a_wrong_backend(report):
    a = report.record("perturbed").agreement
    assert report.record("perturbed").agrees is False
    assert a.max_abs_prob_diff > 0.3
    assert a.voxel_agreement < 0.99
    assert a.dice["background"] < 0.99


def test_flops_of_the_reference_unetr():
    """ViT-B UNETR at 128³: 357 GFLOP per tile (the figure in the performance brief), of which the
    ViT's matmuls, counted by hand, are about a quarter; FLOPs scale with the batch."""
    from tpem_seg.models import get_config
    from tpem_seg.runtime.flops import unetr_flops

    config = get_config("unetr-b16")
    tokens, h, mlp = int(np.prod(config.patch_grid)), config.hidden_size, config.mlp_dim
    vit = 12 * 2 * tokens * (4 * h * h + 2 * h * mlp + 2 * tokens * h)
    flops = unetr_flops(config)
    assert flops / 1e9 == pytest.approx(357.1, rel=1e-3)
    assert 0.2 < vit / flops < 0.35
    assert unetr_flops(get_config("unetr-test"), batch=2) == 2 * unetr_flops(get_config("unetr-test"))


def test_reports_carry_the_command_machine_and_table(report, tmp_path):
    B.write_report(report, tmp_path / "r.json", tmp_path / "r.md")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["command"] == "pytest" and data["machine"]["cpu"]
    assert [r["name"] for r in data["records"]] == [r.name for r in report.records]
    assert data["records"][1]["end_to_end"]["median"] > 0
    text = (tmp_path / "r.md").read_text()
    assert "Command: `pytest`" in text and "| baseline |" in text and "| perturbed |" in text
    assert "| NO |" in text  # the wrong backend is flagged in the table


def test_configuration_names_round_trip():
    for name in ("torch-bf16-cl-cast", "onnxruntime-fp32-nospin-t1", "torch-fp16-compile-graphs", "openvino-bf16-t2",
                 "native-fp32-t2"):
        assert B.BenchConfig.parse(name).name == name
    assert B.BenchConfig.parse("torch-bf16-cast").cast_weights
    assert B.BenchConfig.parse("openvino-bf16-t2").spec() == BackendSpec("openvino", "cpu", "bf16", {"threads": 2})
    with pytest.raises(InputError, match="BACKEND-PRECISION"):
        B.BenchConfig.parse("tflite-fp32")
    with pytest.raises(InputError, match="unknown flag"):
        B.BenchConfig.parse("torch-bf16-fast")


def _native_report(package, threads=None):
    volume, info = B.load_input("synthetic:16,32,40", 2, seed=1)
    configs = [B.BenchConfig("onnxruntime", "fp32", threads=threads), B.BenchConfig(B.NATIVE, "fp32", threads=threads)]
    runners = B.make_runners(package, configs, SETTINGS, "cpu")
    return B.run_bench(volume, package, runners, SETTINGS, command="pytest", input_info=info,
                       progress=lambda line: None)


def test_native_configuration_is_timed_against_the_baseline(package_2ch):
    """libtpem through tpem_seg_cpp: a ratio to the baseline of the same run, the ONNX Runtime runner's
    threads, and agreement with the baseline; no network-only figure (one C call runs it all)."""
    pytest.importorskip("tpem_seg_cpp", reason="tpem_seg_cpp is not installed: run cpp_bindings/install.sh PYTHON")
    from tpem_seg.runtime.devices import cpu_count

    report = _native_report(package_2ch)
    native, ort = report.record("native-fp32"), report.record("onnxruntime-fp32")
    assert native.status == "ok", native.reason
    assert native.speedup > 0 and native.voxels_per_s > 0 and native.peak_rss_mb > 0
    assert native.speedup == pytest.approx(report.record("baseline").end_to_end.median / native.end_to_end.median)
    assert native.network is None and native.pipeline_efficiency is None and native.achieved_flops is None
    assert "libtpem" in native.description and f"{cpu_count()} threads" in native.description
    assert native.agrees and native.agreement.voxel_agreement > 0.999, native.agreement
    # the same network on the same ONNX Runtime: as far from the baseline as the onnxruntime configuration
    assert abs(native.agreement.max_abs_prob_diff - ort.agreement.max_abs_prob_diff) < 1e-4
    assert "| native-fp32 |" in B.markdown_table(report)


def test_native_configuration_skipped_with_the_reason_without_the_binding(package_2ch, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tpem_seg_cpp", None)  # import fails as if not installed
    record = _native_report(package_2ch, threads=1).record("native-fp32-t1")
    assert record.status == "skipped" and "tpem_seg_cpp is not installed" in record.reason
    assert "cpp_bindings/install.sh" in record.reason
    assert B.default_configs("cpu", ["onnxruntime", B.NATIVE], ["fp32", "bf16"])[-1] == B.BenchConfig(B.NATIVE)


def test_synthetic_input_and_crop():
    volume, info = B.load_input("synthetic:8,20,24", 3, crop=B.parse_crop("0:8,5:,:12"))
    assert volume.data.shape == (3, 8, 15, 12) and volume.data.dtype == np.uint16
    assert info["shape_czyx"] == [3, 8, 15, 12] and info["crop"] == [[0, 8], [5, None], [None, 12]]
    again, _ = B.load_input("synthetic:8,20,24", 3, crop=B.parse_crop("0:8,5:,:12"))
    np.testing.assert_array_equal(volume.data, again.data)
    from tpem_seg.errors import InputError

    with pytest.raises(InputError, match="synthetic:Z,Y,X"):
        B.load_input("synthetic:8,20", 1)
    with pytest.raises(InputError, match="--crop"):
        B.parse_crop("0:8,5")


def test_cli_bench_writes_json_and_markdown(package_2ch, tmp_path, capsys, monkeypatch):
    from tpem_seg.cli import main

    from tpem_seg.runtime.bench import harness

    monkeypatch.setattr(harness, "matmul_peaks", lambda device, precisions, settings: {"fp32": 1e11})

    argv = ["bench", "synthetic:16,32,32", "--model", str(package_2ch.path), "--backends", "onnxruntime",
            "--precisions", "fp32", "--device", "cpu", "--repeats", "1", "--baseline-batch-size", "3",
            "--json", str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "| baseline |" in out and "| onnxruntime-fp32 |" in out
    data = json.loads((tmp_path / "b.json").read_text())
    assert [r["status"] for r in data["records"]] == ["ok", "ok"]
    assert "bench" in data["command"]
    assert [r["batch_size"] for r in data["records"]] == [3, 2]  # the baseline's own, then the backend's


def test_baseline_batch_size():
    assert B.BenchSettings().baseline_batch("cpu") == 2 and B.BenchSettings().baseline_batch("cuda") == 4
    assert B.BenchSettings(batch_size=3).baseline_batch("cpu") == 3
    assert B.BenchSettings(batch_size=3, baseline_batch_size=8).baseline_batch("cpu") == 8


def test_cli_bench_rejects_a_batch_below_one(cli, package_2ch):
    result = cli(["bench", "synthetic:8,16,16", "--model", str(package_2ch.path), "--baseline-batch-size", "0"])
    assert result.exit_code == 2 and "at least 1" in result.stderr
