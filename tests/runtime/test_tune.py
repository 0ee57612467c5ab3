"""The tuned default: found once per key, never an unfaithful configuration, explicit flags win."""

import shutil

import numpy as np
import pytest

from tpem_seg.io import write_volume
from tpem_seg.models import open_package
from tpem_seg.runtime import tune as T
from tpem_seg.runtime.backends import BackendSpec
from tpem_seg.runtime.backends.ort_backend import OnnxRuntimeBackend

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh tuning cache, with tuning allowed (the test session turns it off by default)."""
    monkeypatch.setenv("TPEM_SEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(T.NO_TUNE_ENV, raising=False)
    return tmp_path / "cache" / "tune"


@pytest.fixture
def stack(tmp_path, package_2ch):
    data = np.random.default_rng(0).integers(0, 4000, (2, 20, 48, 48)).astype(np.uint16)
    return write_volume(tmp_path / "stack.tif", data, axes="CZYX")


class ConstantBackend(OnnxRuntimeBackend):
    """Deliberately unfaithful and the fastest of all: class 1 everywhere, without running the network."""

    def _infer(self, batch):
        logits = np.zeros((batch.shape[0], self.input_spec.classes, *self.input_spec.tile), np.float32)
        logits[:, 1] = 5.0
        return logits


def test_a_second_run_does_not_tune_again(cache, stack, package_2ch, monkeypatch):
    calls = []
    real = T.tune
    monkeypatch.setattr(T, "tune", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = T.backend_for_run(package_2ch, stack)
    assert len(calls) == 1 and len(list(cache.glob("*.json"))) == 1
    second = T.backend_for_run(package_2ch, stack)
    assert len(calls) == 1, "tuned twice for the same key"
    assert second.describe() == first.describe() and second.default_batch_size() == first.default_batch_size()
    assert T.backend_for_run(package_2ch, stack, batch_size=3).default_batch_size() == 3  # --batch-size wins
    assert len(calls) == 1
    result = T.cached(package_2ch)
    assert result.spec.options["batch_size"] == first.default_batch_size()
    assert [r.package for r in T.cached_here()] == [package_2ch.manifest.name]
    # The winner is a trial: its spec (a row may carry its batch size, as OpenVINO's do) and batch size.
    assert any(t.faithful and without_batch_size(t.spec) == without_batch_size(result.spec.to_dict())
               and t.batch_size == first.default_batch_size() for t in result.trials)


def without_batch_size(spec: dict) -> BackendSpec:
    return BackendSpec.from_dict({**spec, "options": {k: v for k, v in spec["options"].items() if k != "batch_size"}})


def reexported(package, dst, seed: int):
    """The same manifest over other weights, exported again (a retrained package)."""
    torch = pytest.importorskip("torch")
    from dataclasses import replace

    from tpem_seg.export.package import package_from_model
    from tpem_seg.models import create_model

    torch.manual_seed(seed)
    manifest = replace(package.manifest, files={}, parity={})
    return package_from_model(create_model(manifest.config), manifest, dst)


def test_a_changed_package_or_cpu_tunes_again(cache, stack, package_2ch, tmp_path, monkeypatch):
    T.backend_for_run(package_2ch, stack)
    assert T.cached(package_2ch) is not None
    retrained = reexported(package_2ch, tmp_path / package_2ch.path.name, seed=7)  # same name, other weights
    assert T.cached(retrained) is None  # another package sha256
    assert T.cached(open_package(shutil.copytree(package_2ch.path, tmp_path / "copy.tpem"))) is not None
    monkeypatch.setattr(T, "cpu_model", lambda: "Another CPU")
    assert T.cached(package_2ch) is None  # another CPU


def test_an_unfaithful_configuration_is_never_chosen(cache, stack, package_2ch):
    from tpem_seg.io import read_volume

    tiles = T.sample_tiles(read_volume(stack), package_2ch)
    constant = BackendSpec("onnxruntime", "cpu", "fp32", {"variant": "constant"})
    honest = BackendSpec("onnxruntime", "cpu", "fp32", {"threads": 1})

    def make(spec):
        cls = ConstantBackend if spec.options.get("variant") == "constant" else OnnxRuntimeBackend
        return cls(package_2ch, **{"device": spec.device, "precision": spec.precision, **spec.options})

    result = T.tune(package_2ch, tiles, make_backend=make, rows=[(constant, (1, 4)), (honest, (2,))])
    by_spec = {(t.spec["options"].get("variant"), t.batch_size): t for t in result.trials}
    assert by_spec[("constant", 1)].seconds_per_tile < by_spec[(None, 2)].seconds_per_tile  # fastest ...
    assert not by_spec[("constant", 1)].faithful and "labels agree" in by_spec[("constant", 1)].reason
    assert result.spec == honest.replace(options={"batch_size": 2})  # ... and not chosen
    assert by_spec[(None, 2)].max_abs_prob_diff < T.tolerance(package_2ch, "fp32")


def test_explicit_flags_and_no_tune_skip_tuning(cache, stack, package_2ch):
    assert T.backend_for_run(package_2ch, stack, backend="onnxruntime").name == "onnxruntime"
    assert T.backend_for_run(package_2ch, stack, precision="bf16").name == "torch"
    assert T.backend_for_run(package_2ch, stack, tune_here=False).name == "onnxruntime"
    assert T.backend_for_run(package_2ch, stack, backend="onnxruntime", batch_size=3).default_batch_size() == 3
    assert not cache.exists() or not list(cache.glob("*.json"))


def with_parity(package, parity: dict):
    from dataclasses import replace

    from tpem_seg.models.package import ModelPackage

    return ModelPackage(package.path, replace(package.manifest, parity=parity))


def test_tolerances_come_from_the_package(package_2ch):
    strict = with_parity(package_2ch, {"onnxruntime_vs_torch": {"tolerance": 2e-5}})
    assert T.tolerance(strict, "fp32") == 2e-5
    assert T.tolerance(with_parity(package_2ch, {}), "fp32") == T.FP32_TOLERANCE  # none recorded: the export's
    assert T.tolerance(strict, "bf16") == T.REDUCED_TOLERANCE


def test_cli_tune_info_and_run_use_the_cache(cache, stack, package_2ch, tmp_path, cli, caplog):
    result = cli(["tune", str(package_2ch.path), str(stack)])
    assert result.exit_code == 0 and "chosen:" in result.stdout, result.stderr
    assert "tuned in" in caplog.text and "--no-tune" in caplog.text  # says what it cost, and how to skip it
    info = cli(["info"])
    assert package_2ch.manifest.name in info.stdout and "tuned on this CPU" in info.stdout
    caplog.clear()
    run = cli(["run", str(stack), "-o", str(tmp_path / "labels.tif"), "--model", str(package_2ch.path),
               "--no-progress"])
    assert run.exit_code == 0 and "tuned in" not in caplog.text, run.stderr
    assert T.cached(package_2ch).spec.name in run.stderr  # the summary line names the backend that ran


def test_an_unreadable_cache_is_tuned_again(cache, package_2ch, caplog):
    key = T.TuneKey.here(package_2ch)
    T.cache_path(key).parent.mkdir(parents=True)
    T.cache_path(key).write_text("{not json")
    assert T.cached(package_2ch) is None and "tuned again" in caplog.text
    assert T.cached_here() == []
