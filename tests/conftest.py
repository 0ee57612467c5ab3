"""Shared fixtures: small model packages with random weights, built once per session."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def build_package(dst: Path, name: str = "unetr-test", in_channels: int = 2, classes=("background", "vessel",
                  "neuron"), normalization=None, spacing=None, seed: int = 0):
    """A package with random weights (torch needed)."""
    torch = pytest.importorskip("torch")
    from tpem_seg.export.package import package_from_model
    from tpem_seg.models import Manifest, NormalizationSpec, create_model, get_config

    torch.manual_seed(seed)
    config = get_config(name, in_channels=in_channels, out_channels=len(classes))
    model = create_model(config)
    manifest = Manifest(name=dst.stem, config=config, channels=[f"ch{i}" for i in range(in_channels)],
                        classes=list(classes), normalization=normalization or NormalizationSpec(),
                        spacing=spacing, description="random weights, for tests")
    return package_from_model(model, manifest, dst), model


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """The tests' own per-user cache (engines, tuned configurations), and no tuning unless a test asks
    for it (tests/runtime/test_tune.py): the user's cache is never read or written."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TPEM_SEG_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("TPEM_SEG_NO_TUNE", "1")
        yield


@pytest.fixture(scope="session")
def package_2ch(tmp_path_factory):
    """2 channels -> 3 classes, unetr-test (16x32x32 tiles), percentile normalisation."""
    package, _ = build_package(tmp_path_factory.mktemp("pkg") / "test2ch.tpem")
    return package


@pytest.fixture(scope="session")
def package_identity(tmp_path_factory):
    """As package_2ch but with identity normalisation, and the torch model it came from."""
    from tpem_seg.models import NormalizationSpec

    return build_package(tmp_path_factory.mktemp("pkg") / "identity.tpem",
                         normalization=NormalizationSpec(mode="none"), seed=1)


@pytest.fixture(scope="session")
def package_1ch(tmp_path_factory):
    """1 channel -> 2 classes at voxel size (5, 1, 1) µm, like the vessel stacks."""
    package, _ = build_package(tmp_path_factory.mktemp("pkg") / "test1ch.tpem", in_channels=1,
                               classes=("background", "vessel"), spacing=(5.0, 1.0, 1.0), seed=2)
    return package


@pytest.fixture(scope="module")
def one_torch_thread():
    """PyTorch on one intra-op thread for a test module: on a shared 2-core machine its spinning
    OpenMP team can make a tiny network 100x slower (benchmarks/results/README_section.md).
    Results do not depend on it; the thread count is restored afterwards."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(argv: list[str]) -> CliResult:
    """``tpem-seg ARGV`` in this process through the console entry point (exit codes as users see them)."""
    from tpem_seg.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def cli():
    """``cli(argv) -> CliResult``: run ``tpem-seg ARGV`` in this process."""
    return run_cli
