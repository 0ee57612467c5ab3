"""The Python binding: errors as exceptions with the fix, arrays without copies, the GIL released,
the stream equal to the whole-array call, and the install locations."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.cpp_bindings.conftest import ZOO


def _stack(rng, z=16, y=80, x=90):
    volume = rng.integers(0, 40, size=(z, y, x), dtype=np.uint8)
    volume[:, y // 2 - 3:y // 2 + 3, :] = 220  # a bright tube
    return volume


def test_segment_shapes_and_dtypes(vessels_model, rng):
    volume = _stack(rng)
    labels = vessels_model.segment(volume)
    probabilities = vessels_model.segment(volume, output="probabilities")
    assert labels.shape == volume.shape and labels.dtype == np.uint8
    assert probabilities.shape == (2, *volume.shape) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-6)
    np.testing.assert_array_equal(labels, probabilities.argmax(0))
    # the same labels from uint16 and float32 copies of the volume (exact integer intensities)
    np.testing.assert_array_equal(vessels_model.segment(volume.astype(np.uint16)), labels)
    np.testing.assert_array_equal(vessels_model.segment(volume.astype(np.float32)), labels)


def test_refuses_what_it_would_have_to_copy(tpem_seg_cpp, vessels_model, rng):
    volume = _stack(rng)
    with pytest.raises(tpem_seg_cpp.InvalidArgument, match="not C-contiguous"):
        vessels_model.segment(volume[:, :, ::2])
    with pytest.raises(tpem_seg_cpp.InvalidArgument, match="astype"):
        vessels_model.segment(volume.astype(np.int32))
    with pytest.raises(tpem_seg_cpp.InvalidArgument, match="output"):
        vessels_model.segment(volume, output="logits")


def test_bad_inputs_raise_with_the_fix(tpem_seg_cpp, vessels_model, rng, tmp_path):
    with pytest.raises(tpem_seg_cpp.IOFailure, match="no model package folder"):
        tpem_seg_cpp.Model(tmp_path / "absent.tpem")
    with pytest.raises(tpem_seg_cpp.InvalidArgument, match="unknown option 'thread'"):
        tpem_seg_cpp.Model(ZOO / "vessels-2p.tpem", thread=2)
    with pytest.raises(tpem_seg_cpp.BackendError, match="no ONNX Runtime library at"):
        tpem_seg_cpp.Model(ZOO / "vessels-2p.tpem", onnxruntime_library=str(tmp_path / "libonnxruntime.so"))
    with pytest.raises(tpem_seg_cpp.BackendError, match="not enabled in this build"):
        tpem_seg_cpp.Model(ZOO / "vessels-2p.tpem", providers=["cuda"], strict_providers=True)
    volume = _stack(rng).astype(np.float32)
    volume[3, 4, 5] = np.nan
    with pytest.raises(tpem_seg_cpp.InvalidArgument, match="NaN or Inf"):
        vessels_model.segment(volume)
    with pytest.raises(tpem_seg_cpp.InvalidArgument, match="2 channel"):
        vessels_model.segment(np.zeros((2, 4, 8, 8), np.uint8))
    with pytest.raises(tpem_seg_cpp.InvalidArgument, match="positive"):
        vessels_model.segment(np.zeros((0, 8, 8), np.uint8))


def test_tampered_package_refused(tpem_seg_cpp, tmp_path):
    package = tmp_path / "vessels-2p.tpem"
    shutil.copytree(ZOO / "vessels-2p.tpem", package)
    with open(package / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(tpem_seg_cpp.PackageError, match="model.onnx fails its checksum"):
        tpem_seg_cpp.Model(package)


def test_provider_fallback_is_clean(tpem_seg_cpp):
    model = tpem_seg_cpp.Model(ZOO / "vessels-2p.tpem", providers=["tensorrt", "cuda"])
    assert model.info["providers"] == ["cpu"]


def test_gil_released_while_segmenting(vessels_model, rng):
    volume = _stack(rng, z=20, y=140, x=140)
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.005)

    thread = threading.Thread(target=tick)
    thread.start()
    time.sleep(0.05)
    before = len(ticks)
    started = time.perf_counter()
    vessels_model.segment(volume)
    elapsed = time.perf_counter() - started
    during = len(ticks) - before
    done.set()
    thread.join()
    # a held GIL would freeze the ticker for the whole call
    assert elapsed > 0.2 and during >= 10, (elapsed, during)


def test_stream_equals_whole_array(vessels_model, rng):
    volume = _stack(rng, z=37, y=70, x=66)
    whole = vessels_model.segment(volume)
    low, high = vessels_model.fit_normalization(volume)
    out = np.zeros_like(whole)
    slabs = []

    def on_slab(z0, block):
        out[z0:z0 + block.shape[0]] = block
        slabs.append((z0, block.shape[0]))

    stream = vessels_model.stream((1, *volume.shape), np.uint8, on_slab, low=low, high=high)
    for plane in volume:
        stream.push(np.ascontiguousarray(plane))
    stream.finish()
    np.testing.assert_array_equal(out, whole)
    assert len(slabs) > 1 and slabs[0][0] == 0  # slab by slab, as the rows finish


def test_stream_probabilities_equal_whole_array(vessels_model, rng):
    volume = _stack(rng, z=21, y=64, x=70)
    whole = vessels_model.segment(volume, output="probabilities")
    low, high = vessels_model.fit_normalization(volume)
    out = np.zeros_like(whole)

    def on_slab(z0, block):
        out[:, z0:z0 + block.shape[1]] = block

    stream = vessels_model.stream((1, *volume.shape), np.uint8, on_slab, output="probabilities", low=low, high=high)
    for plane in volume:
        stream.push(np.ascontiguousarray(plane))
    stream.finish()
    np.testing.assert_array_equal(out, whole)


def test_stream_callback_error_propagates(tpem_seg_cpp, vessels_model, rng):
    volume = _stack(rng, z=30, y=64, x=64)
    low, high = vessels_model.fit_normalization(volume)

    def on_slab(z0, block):
        raise KeyError("stop here")

    stream = vessels_model.stream((1, *volume.shape), np.uint8, on_slab, low=low, high=high)
    with pytest.raises(KeyError, match="stop here"):
        for plane in volume:
            stream.push(np.ascontiguousarray(plane))


def test_module_prints_install_locations(tpem_seg_cpp):
    def where(flag):
        return Path(subprocess.run([sys.executable, "-m", "tpem_seg_cpp", flag], check=True, capture_output=True,
                                   text=True).stdout.strip())

    assert (where("--include-dir") / "tpem" / "tpem.h").is_file()
    assert (where("--include-dir") / "tpem" / "tpem.hpp").is_file()
    assert (where("--lib-dir") / "libtpem.so").is_file()
    assert (where("--cmake-dir") / "tpemConfig.cmake").is_file()


def test_info_describes_the_package(vessels_model):
    info = vessels_model.info
    assert info["name"] == "vessels-2p" and info["tile"] == [16, 64, 64]
    assert info["classes"] == json.loads((ZOO / "vessels-2p.tpem" / "manifest.json").read_text())["output"]["classes"]
