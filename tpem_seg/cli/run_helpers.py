"""What ``tpem-seg run`` does around the Segmenter: inputs from folders and globs, output names
from a template, existing outputs to skip, and one JSON record per input.

Plain functions with no typer in them, so the command stays a thin face and they are tested
on their own.
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path
from typing import IO, Any, Sequence

from tpem_seg.errors import InputError, OutputError

#: What a folder given as input contributes: the volumes tpem-seg reads.
VOLUME_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".npy", ".zarr")

#: Default output names for several inputs (or a folder as output); ``{name}`` is the input's stem.
LABELS_TEMPLATE = "{name}_labels.tif"
PROBABILITIES_TEMPLATE = "{name}_probabilities.tif"
UNCERTAINTY_TEMPLATE = "{name}_uncertainty.tif"


def stem(path: Path) -> str:
    """``stack.ome.tif`` -> ``stack``: the name without its volume extension(s)."""
    name = path.name
    for ext in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr", ".npy", ".btf", ".tf8"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _is_volume(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES) and not path.name.startswith(".")


def expand_inputs(patterns: Sequence[str | Path]) -> list[Path]:
    """Files, folders (their volumes, sorted; not recursive) and glob patterns, in the given order.

    A ``.zarr`` folder is one volume. Duplicates are dropped.

    Raises:
        InputError: a pattern that matches nothing, or a folder without volumes.
    """
    found: list[Path] = []
    for pattern in map(str, patterns):
        path = Path(pattern).expanduser()
        if glob.has_magic(pattern):
            matches = [Path(m) for m in sorted(glob.glob(str(path)))]
            if not matches:
                raise InputError(f"{pattern} matches no file; check the pattern (quote it so the shell "
                                 "does not expand it)")
            found += matches
        elif path.is_dir() and not path.name.lower().endswith(".zarr"):
            volumes = sorted(p for p in path.iterdir() if _is_volume(p))
            if not volumes:
                raise InputError(f"{path} holds no volumes ({', '.join(VOLUME_SUFFIXES)}); pass files or "
                                 "another folder")
            found += volumes
        else:
            found.append(path)
    unique: dict[Path, None] = dict.fromkeys(found)
    return list(unique)


def output_paths(inputs: Sequence[Path], output: Path, probabilities: bool, template: str | None = None,
                 flag: str = "-o") -> list[Path]:
    """One output per input: ``output`` itself for one input (unless it is a folder), else
    ``output/<template>`` with ``{name}`` the input's stem (``flag``: the option named in errors).

    Raises:
        OutputError: several inputs but ``output`` is not a folder, a template without
            ``{name}`` for several inputs, or two inputs that would get the same output.
    """
    from tpem_seg.io._zarr import is_zarr_folder

    if len(inputs) == 1 and (not output.is_dir() or is_zarr_folder(output)):
        return [output]  # an existing zarr store is an output to replace, not a folder to write into
    if not output.is_dir():
        raise OutputError(f"{output} is not a folder; with several inputs, {flag} must name an existing folder")
    template = template or (PROBABILITIES_TEMPLATE if probabilities else LABELS_TEMPLATE)
    if len(inputs) > 1 and "{name}" not in template:
        raise OutputError(f"--name-template {template!r} has no {{name}}; every input would write the same file")
    try:
        outputs = [output / template.format(name=stem(p)) for p in inputs]
    except (KeyError, IndexError, ValueError) as err:
        raise OutputError(f"--name-template {template!r} is not valid ({err}); use {{name}}, e.g. "
                          "{name}_labels.zarr") from None
    clashes = sorted({str(o) for o in outputs if outputs.count(o) > 1})
    if clashes:
        raise OutputError(f"several inputs would write {clashes[0]}; rename the inputs or change --name-template")
    return outputs


def run_record(src: Path, dst: Path, spacing_in: Sequence[float] | None, spacing_used: Sequence[float] | None,
               model: str, model_sha256: str, backend: str, device: str, precision: str,
               shape: Sequence[int], tiles: int, seconds: float, uncertainty: Path | None = None,
               uncertainty_plan: dict[str, Any] | None = None) -> dict[str, Any]:
    """One machine-readable record of a run (spacings in µm, z/y/x; seconds wall clock); with an
    uncertainty map, its path and how it was measured (``method``, ``passes``, ``reason``)."""
    voxels = 1
    for n in shape:
        voxels *= int(n)
    return {"input": str(src), "output": str(dst), "shape": [int(n) for n in shape],
            "voxel_size_in_um": list(spacing_in) if spacing_in else None,
            "voxel_size_used_um": list(spacing_used) if spacing_used else None,
            "model": model, "model_sha256": model_sha256, "backend": backend, "device": device,
            "precision": precision, "tiles": int(tiles), "seconds": round(float(seconds), 3),
            "voxels_per_second": round(voxels / seconds, 1) if seconds > 0 else None,
            **({"uncertainty": {"output": str(uncertainty), **(uncertainty_plan or {})}} if uncertainty else {})}


class JsonLines:
    """Writes one JSON object per line to a file (``-``: stdout), flushed after each record."""

    def __init__(self, target: str | None) -> None:
        self._target = target
        self._file: IO[str] | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self._target is None:
            return
        if self._file is None:
            try:
                self._file = sys.stdout if self._target == "-" else open(self._target, "w", encoding="utf-8")
            except OSError as err:
                raise OutputError(f"cannot write --json {self._target} ({err.strerror}); choose another path") \
                    from err
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
        self._file = None
