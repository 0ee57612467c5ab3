"""Distributed runs on a LocalCluster of 2 worker processes: outputs bit for bit those of one
Segmenter run, through a killed worker, a stopped and resumed run, and empty blocks."""

import json
import os
import signal

import numpy as np
import pytest

from tpem_seg import Segmenter, read_volume, write_volume
from tpem_seg.distributed import run_distributed
from tpem_seg.util.partials import resumable_name

ORT = {"backend": "onnxruntime", "device": "cpu", "backend_options": {"threads": 1}}
BLOCK = (8, 40, 48)  # 3 x 2 x 2 blocks over SHAPE, ragged at every far edge
SHAPE = (2, 20, 70, 90)


def volume(seed=3, dark_half=False):
    data = np.random.default_rng(seed).integers(0, 4000, SHAPE, dtype=np.uint16)
    if dark_half:
        data[:, :, :, :60] = 0  # every tile over x < 48 (the first column of blocks) is dark
    return data


def reference(package, data, **options):
    with Segmenter(package, **ORT, **options) as seg:
        return seg.segment(data, axes="CZYX"), seg.last_summary


@pytest.fixture(scope="module")
def zarr_input(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "in.zarr"
    write_volume(path, volume(), "CZYX")
    return path


@pytest.mark.parametrize("output", ["labels", "probabilities"])
def test_distributed_output_equals_one_segmenter_run(package_2ch, client, zarr_input, tmp_path, output):
    expected, single = reference(package_2ch, volume(), output=output)
    dst = tmp_path / "out.zarr"
    summary = run_distributed(zarr_input, dst, package_2ch, client=client, output=output, block=BLOCK, **ORT)
    got = np.asarray(read_volume(dst).data)
    np.testing.assert_array_equal(got, expected)  # bit for bit, float16 probabilities too
    assert summary.extra["blocks"] == 12 and summary.extra["workers"] == 2
    assert 50 < summary.extra["worker_peak_rss_mb"] < 4096  # a Python process with ONNX Runtime, one small block
    assert summary.tiles > single.tiles  # tiles at block edges run in both neighbours
    assert not resumable_name(dst).exists()
    assert not (dst / ".tpem-run" / "done").exists() and (dst / ".tpem-run" / "manifest.json").is_file()
    assert_valid_ome_zarr(dst, output)


def assert_valid_ome_zarr(path, output):
    """ome-zarr-models (nobody here wrote it) accepts the output: an image-label, or an image."""
    import zarr

    pytest.importorskip("ome_zarr_models", reason="ome-zarr-models is not installed")
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    group = zarr.open_group(str(path), mode="r")
    if output == "labels":
        label = ImageLabel.from_zarr(group)
        assert [p.model_dump()["class"] for p in label.ome_attributes.image_label.properties] == \
            ["background", "vessel", "neuron"]
    else:
        Image.from_zarr(group)


def test_tiff_input_is_read_by_plane_on_workers(package_2ch, client, tmp_path):
    write_volume(tmp_path / "in.tif", volume(4), "CZYX")
    expected, _ = reference(package_2ch, volume(4))
    run_distributed(tmp_path / "in.tif", tmp_path / "out.zarr", package_2ch, client=client, block=BLOCK, **ORT)
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "out.zarr").data), expected)


def test_empty_blocks_store_nothing_and_run_no_network(package_2ch, client, tmp_path):
    data = volume(5, dark_half=True)
    write_volume(tmp_path / "in.zarr", data, "CZYX")
    expected, single = reference(package_2ch, data, skip_empty=True)
    summary = run_distributed(tmp_path / "in.zarr", tmp_path / "out.zarr", package_2ch, client=client,
                              block=BLOCK, skip_empty=True, **ORT)
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "out.zarr").data), expected)
    assert summary.extra["skipped_tiles"] > 0
    chunks = [f for _, _, files in os.walk(tmp_path / "out.zarr" / "0" / "c") for f in files]
    assert len(chunks) == 6  # the first column of blocks is all background: its chunks are not stored


def test_a_worker_killed_mid_run_loses_nothing(package_2ch, client, zarr_input, tmp_path):
    expected, _ = reference(package_2ch, volume())
    before = client.run(os.getpid)
    killed = []

    def kill_the_other(result):
        if not killed:  # the other worker is busy with a block of its own now
            address, pid = next((a, p) for a, p in before.items() if a != result.worker)
            os.kill(pid, signal.SIGKILL)
            killed.append(address)

    summary = run_distributed(zarr_input, tmp_path / "out.zarr", package_2ch, client=client, block=BLOCK,
                              on_block=kill_the_other, **ORT)
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "out.zarr").data), expected)
    assert killed and summary.extra["blocks"] == 12
    client.wait_for_workers(2, timeout=60)
    assert set(client.run(os.getpid).values()) != set(before.values())  # the nanny restarted it


def fail_first_block_once(flag: str) -> None:
    """On a worker: the first block any worker segments raises once (``flag`` records it), the way a
    transient fault (a storage hiccup, a lost GPU context) would; later calls run as usual."""
    from tpem_seg.runtime.segmenter import Segmenter as Seg

    original = Seg.segment_block

    def flaky(self, inputs, core):
        try:
            with open(flag, "x") as marker:  # atomic: exactly one call across the workers fails
                marker.write(repr(core))
        except FileExistsError:
            return original(self, inputs, core)
        raise RuntimeError("transient fault injected by the test")

    flaky.original = original
    Seg.segment_block = flaky


def restore_segment_block() -> None:
    from tpem_seg.runtime.segmenter import Segmenter as Seg

    Seg.segment_block = getattr(Seg.segment_block, "original", Seg.segment_block)


def test_a_block_that_fails_once_is_retried(package_2ch, client, zarr_input, tmp_path):
    expected, _ = reference(package_2ch, volume())
    flag = tmp_path / "failed-once"
    client.run(fail_first_block_once, str(flag))
    try:
        summary = run_distributed(zarr_input, tmp_path / "out.zarr", package_2ch, client=client, block=BLOCK, **ORT)
    finally:
        client.run(restore_segment_block)
    assert flag.is_file()  # the fault did happen
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "out.zarr").data), expected)
    assert summary.extra["blocks"] == 12


class Stop(Exception):
    pass


def stop_after(n):
    seen = []

    def on_block(result):
        seen.append(result.index)
        if len(seen) >= n:
            raise Stop

    return on_block


def test_a_stopped_run_resumes_without_redoing_done_blocks(package_2ch, client, zarr_input, tmp_path):
    expected, _ = reference(package_2ch, volume())
    dst = tmp_path / "out.zarr"
    with pytest.raises(Stop):
        run_distributed(zarr_input, dst, package_2ch, client=client, block=BLOCK, on_block=stop_after(3), **ORT)
    assert not dst.exists() and resumable_name(dst).is_dir()
    done_before = {int(p.stem) for p in resumable_name(dst).glob(".tpem-run/done/*/*.json")}
    assert 3 <= len(done_before) < 12
    assert_done_block_returns_at_once(client, resumable_name(dst), zarr_input, package_2ch, min(done_before))
    ran = []
    summary = run_distributed(zarr_input, dst, package_2ch, client=client, block=BLOCK, resume=True,
                              on_block=lambda r: ran.append(r.index), **ORT)
    np.testing.assert_array_equal(np.asarray(read_volume(dst).data), expected)
    assert not done_before & set(ran)
    assert summary.extra["resumed_blocks"] >= len(done_before)


def assert_done_block_returns_at_once(client, store, source, package, index):
    """A task for a block whose marker is there (a retry, a resumed run) returns the marker's record
    without segmenting or writing anything."""
    from tpem_seg.distributed.spec import RunSpec
    from tpem_seg.distributed.worker import run_block

    manifest = json.loads((store / ".tpem-run" / "manifest.json").read_text())
    fields = {k: manifest[k] for k in RunSpec.__dataclass_fields__ if k in manifest}
    spec = RunSpec(**fields, store=str(store), source=str(source), package=str(package.path))
    marker = next(store.glob(f".tpem-run/done/*/{index}.json"))
    iz, rest = divmod(index, 2 * 2)  # the block's one chunk (chunks = blocks here): c/iz/iy/ix
    chunk = store / "0" / "c" / str(iz) / str(rest // 2) / str(rest % 2)
    before = marker.stat().st_mtime_ns, chunk.stat().st_mtime_ns
    result = client.submit(run_block, spec, index, pure=False).result()  # no plugin registered: none needed
    assert result["already_done"] and result["index"] == index
    assert (marker.stat().st_mtime_ns, chunk.stat().st_mtime_ns) == before


def test_resume_refuses_another_model_or_options_with_exit_2(package_2ch, client, zarr_input, tmp_path, cli):
    dst = tmp_path / "out.zarr"
    with pytest.raises(Stop):
        run_distributed(zarr_input, dst, package_2ch, client=client, block=BLOCK, on_block=stop_after(1), **ORT)
    base = ["run", str(zarr_input), "-o", str(dst), "--cluster", "local:1", "--backend", "onnxruntime",
            "--device", "cpu", "--block", ",".join(map(str, BLOCK))]
    for extra in (["--model", str(package_2ch.path), "--overlap", "0.5"],
                  ["--model", str(package_2ch.path), "--probabilities"],
                  ["--model", "vessels-2p", "--channels", "0"]):  # another model (bundled, 1 channel)
        result = cli(base + extra + ["--resume"])
        assert result.exit_code == 2
        assert result.stderr.strip().startswith("error: cannot resume") and len(result.stderr.strip().splitlines()) == 1
    result = cli(base + ["--model", str(package_2ch.path)])  # without --resume: the stopped run is not thrown away
    assert result.exit_code == 2 and "--resume" in result.stderr
    assert resumable_name(dst).is_dir()


def test_a_resampled_volume_thinner_than_a_tile_equals_one_run(client, tmp_path):
    # vessels-2p (the bundled model, 16x64x64 tiles at 5 x 0.994 x 0.994 µm): 12 planes < a tile, and an
    # input at 0.7 µm in-plane, resampled block by block on the workers.
    data = np.random.default_rng(6).integers(0, 4000, (12, 80, 100), dtype=np.uint16)
    write_volume(tmp_path / "in.zarr", data, "ZYX", spacing=(5.0, 0.7, 0.7))
    with Segmenter("vessels-2p", **ORT, output="probabilities") as seg:
        expected = seg.segment(data, spacing=(5.0, 0.7, 0.7))
        assert seg.last_summary.resampled
    summary = run_distributed(tmp_path / "in.zarr", tmp_path / "out.zarr", "vessels-2p", client=client,
                              output="probabilities", block=(8, 48, 56), **ORT)
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "out.zarr").data), expected)
    assert summary.resampled and summary.extra["blocks"] == 8


def test_the_cli_runs_on_a_local_cluster_and_ends_with_the_summary_line(package_2ch, zarr_input, tmp_path, cli):
    import zarr

    with Segmenter(package_2ch, **ORT) as seg:  # the streaming writer's pyramid, on one machine
        seg.segment_file(zarr_input, tmp_path / "one.zarr", pyramid=3)
    result = cli(["run", str(zarr_input), "-o", str(tmp_path / "out.zarr"), "--cluster", "local:2", "--model",
                  str(package_2ch.path), "--backend", "onnxruntime", "--device", "cpu", "--block", "8,40,48",
                  "--pyramid", "3", "--json", str(tmp_path / "run.json")])
    assert result.exit_code == 0, result.stderr
    one, out = (zarr.open_group(str(tmp_path / name), mode="r") for name in ("one.zarr", "out.zarr"))
    np.testing.assert_array_equal(out["0"][:], reference(package_2ch, volume())[0])
    for level in ("0", "1", "2"):  # levels 1 and 2 filled chunk by chunk by tasks after the blocks
        np.testing.assert_array_equal(out[level][:], one[level][:])
    assert out.attrs["ome"]["multiscales"][0]["datasets"] == one.attrs["ome"]["multiscales"][0]["datasets"]
    assert_valid_ome_zarr(tmp_path / "out.zarr", "labels")
    assert result.stderr.strip().splitlines()[-1].startswith(f"{tmp_path / 'out.zarr'}: 20x70x90 voxels in ")
    assert "in 12 blocks" in result.stderr
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["backend"] == "onnxruntime" and record["shape"] == [20, 70, 90]
