"""Concurrent use: a Segmenter shared by threads (calls are serialised), the engine cache and the package
cache filled by several writers at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tpem_seg.models import Manifest, NormalizationSpec, get_config, open_package, write_package
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime import Segmenter
from tpem_seg.runtime.backends import Backend


class OneAtATimeBackend(Backend):
    """Echoes its input, slowly, and counts how many calls overlap."""

    name = "one-at-a-time"

    def __init__(self, package: ModelPackage):
        super().__init__(package)
        self.active = 0
        self.most = 0
        self._count = threading.Lock()

    def _load(self) -> None:
        pass

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with self._count:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.002)  # let other threads try to come in
        with self._count:
            self.active -= 1
        return batch.copy()


def _package() -> ModelPackage:
    config = get_config("unetr-test", in_channels=2, out_channels=2, tile=(16, 16, 16))
    manifest = Manifest(name="threads", config=config, channels=["a", "b"], classes=["a", "b"],
                        normalization=NormalizationSpec(mode="none"))
    return ModelPackage(path=None, manifest=manifest)  # type: ignore[arg-type]  # never read from disk


def test_segmenter_shared_by_threads_serialises_runs(tmp_path):
    package = _package()
    backend = OneAtATimeBackend(package)
    segmenter = Segmenter(package, backend, output="logits", overlap=0.5, batch_size=1, resample=False)
    volumes = [np.random.default_rng(i).random((2, 20, 24, 28), dtype=np.float32) for i in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda v: segmenter.segment(v, axes="CZYX"), volumes))
    assert backend.most == 1  # never two runs in the backend at once
    for volume, logits in zip(volumes, results):
        np.testing.assert_allclose(logits, volume, rtol=1e-5, atol=1e-6)  # each got its own volume back
    from tpem_seg.io import write_volume

    # segment_file and segment from threads at once: the same lock.
    src = write_volume(tmp_path / "v.npy", volumes[0], "CZYX")
    labels = Segmenter(package, backend, overlap=0.5, resample=False)
    with ThreadPoolExecutor(max_workers=3) as pool:
        jobs = [pool.submit(labels.segment_file, src, tmp_path / f"out{i}.npy") for i in range(3)]
        [job.result() for job in jobs]
    assert backend.most == 1


def test_package_cache_filled_by_concurrent_writers(tmp_path):
    dst = tmp_path / "cache" / "model.tpem"
    config = get_config("unetr-test", in_channels=1, out_channels=2)

    def publish(i: int) -> None:
        manifest = Manifest(name="model", config=config, channels=["c"], classes=["bg", "fg"],
                            description=f"writer {i}")
        write_package(dst, manifest, {"model.onnx": bytes([i]) * 200_000}, overwrite=True)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(publish, range(16)))
    package = open_package(dst)  # verified: one writer's complete package, not a mix
    writer = int(package.manifest.description.split()[-1])
    assert package.onnx_path.read_bytes() == bytes([writer]) * 200_000
    assert sorted(p.name for p in dst.parent.iterdir()) == ["model.tpem"]


def test_engine_cache_written_by_concurrent_builds(tmp_path):
    from tpem_seg.runtime import engines as E

    key = E.EngineKey("NVIDIA Test GPU", "9.0", "10.3.0", "fp16", E.BatchProfile(1, 4, 8))
    plans = [bytes([i]) * 12_000_000 for i in range(8)]  # large: writes release the GIL and overlap

    def build(i: int):
        return E.write_engine(tmp_path, key, plans[i], {"onnx_sha256": "x"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        records = list(pool.map(build, range(8)))
    plan = records[0].plan.read_bytes()
    assert plan in plans  # one build's whole plan, never interleaved bytes
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([records[0].plan.name, records[0].sidecar.name])  # no temporary files left
    # The sidecar names a plan by sha256: if another build's plan won the race, it says so.
    sidecar = E.read_sidecar(records[0].sidecar)
    record = E.EngineRecord(records[0].plan, records[0].sidecar, sidecar)
    problem = record.plan_problem()
    assert problem is None or "fails its sha256" in problem
