"""The installed C ABI from outside Python's binding: a C program built with `cc` against the
installed header and library alone, Python ctypes, CMake's find_package(tpem), and the
tpem-seg-cpp program. Each must give the binding's labels."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cpp_bindings.conftest import CPP, ZOO

PACKAGE = ZOO / "vessels-2p.tpem"


@pytest.fixture(scope="module")
def stack():
    rng = np.random.default_rng(3)
    volume = rng.integers(0, 30, size=(18, 70, 75), dtype=np.uint8)
    volume[:, 30:36, :] = 200
    volume[:, :, 40:44] = 150
    return volume


@pytest.fixture(scope="module")
def expected(vessels_model, stack):
    return vessels_model.segment(stack)


def test_c_program_built_with_cc(tpem_seg_cpp, stack, expected, tmp_path):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) on PATH")
    exe = tmp_path / "segment"
    lib = tpem_seg_cpp.lib_dir()
    subprocess.run([cc, str(CPP / "examples" / "segment.c"), "-I", tpem_seg_cpp.include_dir(), "-L", lib, "-ltpem",
                    f"-Wl,-rpath,{lib}", "-o", str(exe)], check=True)
    stack.tofile(tmp_path / "in.raw")
    subprocess.run([str(exe), str(PACKAGE), str(tmp_path / "in.raw"), "u8", "1", *map(str, stack.shape),
                    str(tmp_path / "out.raw")], check=True, capture_output=True)
    labels = np.fromfile(tmp_path / "out.raw", dtype=np.uint8).reshape(stack.shape)
    np.testing.assert_array_equal(labels, expected)
    bad = subprocess.run([str(exe), str(tmp_path / "none.tpem"), str(tmp_path / "in.raw"), "u8", "1",
                          *map(str, stack.shape), str(tmp_path / "o.raw")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no model package folder" in bad.stderr


def test_ctypes(tpem_seg_cpp, stack, expected):
    lib = ctypes.CDLL(str(Path(tpem_seg_cpp.lib_dir()) / "libtpem.so"))
    lib.tpem_abi_version.restype = ctypes.c_uint32
    lib.tpem_last_error.restype = ctypes.c_size_t
    lib.tpem_last_error.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.tpem_model_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.tpem_model_close.argtypes = [ctypes.c_void_p]
    lib.tpem_segment.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int64),
                                 ctypes.POINTER(ctypes.c_double), ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                                 ctypes.c_void_p, ctypes.c_void_p]
    assert lib.tpem_abi_version() == tpem_seg_cpp.abi_version() == 1

    def message():
        buf = ctypes.create_string_buffer(1024)
        lib.tpem_last_error(buf, len(buf))
        return buf.value.decode()

    model = ctypes.c_void_p()
    assert lib.tpem_model_open(b"/nonexistent.tpem", None, ctypes.byref(model)) == 2  # TPEM_ERR_IO
    assert "no model package folder" in message()
    assert lib.tpem_model_open(str(PACKAGE).encode(), b'{"threads": 2}', ctypes.byref(model)) == 0, message()
    try:
        shape = (ctypes.c_int64 * 4)(1, *stack.shape)
        out = np.empty(stack.shape, np.uint8)
        status = lib.tpem_segment(model, stack.ctypes.data, 0, shape, None, 0, out.ctypes.data, out.nbytes - 1,
                                  None, None)
        assert status == 5 and f"{out.nbytes} are needed" in message()  # TPEM_ERR_BUFFER_TOO_SMALL
        status = lib.tpem_segment(model, stack.ctypes.data, 0, shape, None, 0, out.ctypes.data, out.nbytes, None, None)
        assert status == 0, message()
        np.testing.assert_array_equal(out, expected)
    finally:
        lib.tpem_model_close(model)


def test_cmake_find_package(tpem_seg_cpp, stack, expected, tmp_path):
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("no cmake on PATH")
    project = tmp_path / "consumer"
    project.mkdir()
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(consumer CXX)\nset(CMAKE_CXX_STANDARD 17)\n"
        "find_package(tpem 0.1 REQUIRED)\n"
        f"add_executable(segment-cpp {CPP / 'examples' / 'segment.cpp'})\n"
        "target_link_libraries(segment-cpp PRIVATE tpem::tpem)\n")
    build = tmp_path / "build"
    subprocess.run([cmake, "-S", str(project), "-B", str(build), f"-Dtpem_DIR={tpem_seg_cpp.cmake_dir()}"],
                   check=True, capture_output=True)
    subprocess.run([cmake, "--build", str(build)], check=True, capture_output=True)
    stack.astype(np.uint16).tofile(tmp_path / "in.raw")
    run = subprocess.run([str(build / "segment-cpp"), str(PACKAGE), str(tmp_path / "in.raw"), "1",
                          *map(str, stack.shape), str(tmp_path / "out.raw")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "planes 0.." in run.stderr  # the stream wrote slab by slab
    labels = np.fromfile(tmp_path / "out.raw", dtype=np.uint8).reshape(stack.shape)
    np.testing.assert_array_equal(labels, expected)


def test_tpem_seg_cpp_program(tpem_seg_cpp, vessels_model, stack, expected, tmp_path):
    exe = Path(sys.executable).parent / "tpem-seg-cpp"
    if not exe.is_file():
        pytest.skip(f"{exe} is not installed (cpp_bindings/install.sh installs it)")
    np.save(tmp_path / "in.npy", stack)
    subprocess.run([str(exe), "run", str(tmp_path / "in.npy"), str(tmp_path / "labels.npy"), "--model", str(PACKAGE)],
                   check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), expected)
    subprocess.run([str(exe), "run", str(tmp_path / "in.npy"), str(tmp_path / "p.npy"), "--model", str(PACKAGE),
                    "--probabilities", "--spacing", "2.5,0.994,0.994"], check=True)
    probabilities = np.load(tmp_path / "p.npy")
    np.testing.assert_array_equal(probabilities,
                                  vessels_model.segment(stack, spacing=(2.5, 0.994, 0.994), output="probabilities"))
    bad = subprocess.run([str(exe), "run", str(tmp_path / "in.npy"), str(tmp_path / "x.npy"), "--model",
                          str(tmp_path / "none.tpem")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no model package folder" in bad.stderr
    assert not (tmp_path / "x.npy").exists()
