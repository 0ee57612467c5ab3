"""Temporary names, clean-up after a killed writer, and one writer per output (processes, threads)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tpem_seg.errors import OutputError
from tpem_seg.io import open_writer, read_volume
from tpem_seg.util.partials import OutputLock, partial_name, remove_stale_partials


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_partial_name_carries_this_process(tmp_path):
    name = partial_name(tmp_path / "labels.tif").name
    assert name.startswith(".labels.tif.partial-") and f"-{os.getpid()}-" in name


def test_only_partials_of_dead_processes_here_are_removed(tmp_path):
    final = tmp_path / "labels.tif"
    mine = partial_name(final)
    mine.touch()
    dead = mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-"))
    dead.touch()
    dead_folder = dead.with_name(dead.name[:-8] + "0badcafe")
    dead_folder.mkdir()
    (dead_folder / "chunk").touch()
    foreign = tmp_path / (mine.name.split("partial-")[0] + "partial-zzzzzz-1-00000000")
    foreign.touch()
    other_output = tmp_path / partial_name(tmp_path / "other.tif").name.replace(f"-{os.getpid()}-",
                                                                                 f"-{_dead_pid()}-")
    other_output.touch()
    removed = remove_stale_partials(final)
    assert sorted(removed) == sorted([dead, dead_folder])
    assert mine.exists() and foreign.exists() and other_output.exists()


def _hold(path: str, ready, release) -> None:
    with OutputLock(Path(path)):
        ready.set()
        release.wait(30)


def test_a_second_writer_of_the_same_output_is_refused(tmp_path):
    final = tmp_path / "labels.tif"
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(final), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(OutputError, match="another run is writing"):
            open_writer(final, (2, 4, 4), np.uint8, "ZYX")
        assert not final.exists()
        assert not any(".partial-" in p.name for p in tmp_path.iterdir())
    finally:
        release.set()
        holder.join(30)
    with open_writer(final, (2, 4, 4), np.uint8, "ZYX") as writer:  # free again once the holder is done
        writer.write(np.ones((2, 4, 4), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]  # no lock file left either


def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    final = tmp_path / "labels.tif"
    code = ("import sys, os, pathlib; from tpem_seg.util.partials import OutputLock; "
            f"OutputLock(pathlib.Path({str(final)!r})).acquire(); os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert (tmp_path / ".labels.tif.lock").exists()
    with OutputLock(final):
        pass
    assert not (tmp_path / ".labels.tif.lock").exists()


def test_same_output_from_two_processes_at_once_gives_one_whole_file(tmp_path):
    # Both start together: one writes, the other is refused or (if it starts after the first
    # committed) replaces it with its own complete file. Never a mix, never a leftover.
    final = tmp_path / "labels.npy"
    code = ("import sys, numpy as np; from tpem_seg.io import write_volume; from tpem_seg.errors import OutputError\n"
            "v = int(sys.argv[1])\n"
            "try:\n    write_volume(sys.argv[2], np.full((64, 128, 128), v, np.uint8), 'ZYX')\n"
            "except OutputError as e:\n    print('refused', e)\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(v), str(final)], env=env, stdout=subprocess.PIPE,
                              text=True) for v in (1, 2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    data = np.asarray(read_volume(final).data[...])
    assert np.unique(data).size == 1 and int(data.flat[0]) in (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.npy", "labels.npy.json"], outs
