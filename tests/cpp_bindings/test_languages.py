"""The C# and Java examples of docs/cpp.md (cpp_bindings/examples/Segment.cs, Segment.java) compiled
and run against the installed libtpem: each must give the binding's labels, and report a missing
package in one line with exit code 2. They skip where the compiler, runtime or JNA is absent
(Debian: mono-mcs mono-runtime; openjdk-17-jdk-headless libjna-java)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.cpp_bindings.conftest import CPP, ZOO

PACKAGE = ZOO / "vessels-2p.tpem"
JNA = Path("/usr/share/java/jna.jar")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A crop of a thin vessel-like stack, written raw: (path, volume (Z, Y, X) uint8)."""
    rng = np.random.default_rng(5)
    volume = rng.integers(0, 30, size=(18, 70, 75), dtype=np.uint8)
    volume[:, 20:26, :] = 210
    volume[:, :, 50:53] = 160
    path = tmp_path_factory.mktemp("lang") / "in.raw"
    volume.tofile(path)
    return path, volume


def _check(run, stack, expected, tmp_path):
    path, volume = stack
    out = tmp_path / "out.raw"
    done = run([str(PACKAGE), str(path), *map(str, volume.shape), str(out)])
    assert done.returncode == 0, done.stderr
    assert "labels written" in done.stdout
    np.testing.assert_array_equal(np.fromfile(out, np.uint8).reshape(volume.shape), expected)
    bad = run([str(tmp_path / "none.tpem"), str(path), *map(str, volume.shape), str(tmp_path / "o.raw")])
    assert bad.returncode == 2 and "no model package folder" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_csharp_pinvoke(tpem_seg_cpp, vessels_model, stack, tmp_path):
    mcs, mono = shutil.which("mcs"), shutil.which("mono")
    if mcs is None or mono is None:
        pytest.skip("no C# compiler and runtime (mcs, mono): apt-get install mono-mcs mono-runtime")
    exe = tmp_path / "Segment.exe"
    subprocess.run([mcs, str(CPP / "examples" / "Segment.cs"), f"-out:{exe}"], check=True, capture_output=True)
    env = dict(os.environ, LD_LIBRARY_PATH=tpem_seg_cpp.lib_dir())
    _check(lambda args: subprocess.run([mono, str(exe), *args], env=env, capture_output=True, text=True),
           stack, vessels_model.segment(stack[1]), tmp_path)


def test_java_jna(tpem_seg_cpp, vessels_model, stack, tmp_path):
    javac, java = shutil.which("javac"), shutil.which("java")
    if javac is None or java is None or not JNA.is_file():
        pytest.skip(f"no javac/java or no JNA at {JNA}: apt-get install openjdk-17-jdk-headless libjna-java")
    subprocess.run([javac, "-cp", str(JNA), "-d", str(tmp_path), str(CPP / "examples" / "Segment.java")],
                   check=True, capture_output=True)
    classpath = f"{JNA}{os.pathsep}{tmp_path}"
    _check(lambda args: subprocess.run([java, "-cp", classpath, f"-Djna.library.path={tpem_seg_cpp.lib_dir()}",
                                        "Segment", *args], capture_output=True, text=True),
           stack, vessels_model.segment(stack[1]), tmp_path)
