"""Output paths that must not destroy inputs.

A run writes one output per input. Before anything is written, every output is
compared with every input as the file system sees them: symlinks followed, ``..``
resolved, hard links caught by inode. An output may not be an input, lie inside an
input folder (a zarr store), or hold an input inside it (a zarr output replacing a
folder that holds an input); two inputs may not map onto one output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from tpem_seg.errors import OutputError


def _resolved(path: Path) -> Path:
    """``path`` with ``~``, symlinks and ``..`` resolved, whether or not it exists yet."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _same_file(a: Path, b: Path) -> bool:
    """True when both exist and are one file (hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _within(inner: Path, outer: Path) -> bool:
    return inner != outer and outer in inner.parents


def check_outputs(inputs: Sequence[os.PathLike | str], outputs: Sequence[os.PathLike | str]) -> None:
    """Refuse outputs that would overwrite, or write into, any input.

    Args:
        inputs: the volumes to read (files or zarr folders).
        outputs: where their results go, one per input.

    Raises:
        OutputError: an output is an input (also through symlinks, ``..`` or a hard link), lies
            inside an input folder or contains an input, or two inputs share one output.
    """
    real_inputs = [(Path(p), _resolved(Path(p))) for p in inputs]
    seen: dict[Path, Path] = {}  # resolved output -> the input it is for
    for source, out in zip(map(Path, inputs), map(Path, outputs)):
        real_out = _resolved(out)
        for given, real_in in real_inputs:
            if real_out == real_in or _same_file(out, given):
                raise OutputError(f"output {out} is the input {given}: it would overwrite it; write the "
                                  "result elsewhere (e.g. -o labels.tif)")
            if _within(real_out, real_in):
                raise OutputError(f"output {out} lies inside the input {given}; write the result outside it")
            if _within(real_in, real_out):
                raise OutputError(f"output {out} would replace a folder holding the input {given}; "
                                  "choose another output name")
        if real_out in seen:
            raise OutputError(f"inputs {seen[real_out]} and {source} would both be written to {real_out}; "
                              "give them different names or segment them into different folders")
        seen[real_out] = source
