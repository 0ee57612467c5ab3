"""Model packages on disk: find, open and verify, and write.

``open_package`` checks the sha256 of every file the manifest lists before the
runtime touches it, so a tampered or truncated package is refused up front.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from tpem_seg.errors import PackageError
from tpem_seg.models.manifest import Manifest

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SUFFIX = ".tpem"
ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ModelPackage:
    """An opened, verified package folder."""

    path: Path
    manifest: Manifest

    @property
    def onnx_path(self) -> Path:
        return self.path / self.manifest.onnx_file

    @property
    def weights_path(self) -> Path | None:
        return self.path / self.manifest.weights_file if self.manifest.weights_file else None

    @property
    def engines_dir(self) -> Path:
        return self.path / "engines"

    @property
    def name(self) -> str:
        return self.manifest.name


def zoo_packages() -> dict[str, Path]:
    """Bundled packages by name."""
    if not ZOO_DIR.is_dir():
        return {}
    return {p.name[: -len(SUFFIX)]: p for p in sorted(ZOO_DIR.glob(f"*{SUFFIX}")) if (p / MANIFEST).is_file()}


def resolve_package_path(name_or_path: str | os.PathLike) -> Path:
    """A package folder from a bundled name or a path."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.name == MANIFEST and path.is_file():
        return path.parent
    bundled = zoo_packages()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    known = ", ".join(bundled) or "none bundled"
    raise PackageError(f"no model package {str(name_or_path)!r}: give a bundled name ({known}) or the path "
                       f"of a NAME.tpem folder")


def read_manifest(package_dir: Path) -> Manifest:
    manifest_path = package_dir / MANIFEST
    if not manifest_path.is_file():
        raise PackageError(f"{package_dir} has no {MANIFEST}; it is not a model package (re-export it)")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PackageError(f"{manifest_path} is not valid JSON ({err}); re-export the package") from err
    if not isinstance(data, dict):
        raise PackageError(f"{manifest_path} is not a JSON object; re-export the package")
    return Manifest.from_dict(data)


def verify_files(package_dir: Path, manifest: Manifest) -> None:
    """Raise PackageError unless every listed file exists with its recorded sha256."""
    if manifest.onnx_file not in manifest.files:
        raise PackageError(f"{package_dir}: manifest lists no checksum for {manifest.onnx_file}; re-export it")
    for rel, expected in manifest.files.items():
        path = package_dir / rel
        if not path.is_file():
            raise PackageError(f"{package_dir}: {rel} is missing; re-export or re-download the package")
        actual = sha256_file(path)
        if actual != expected:
            raise PackageError(f"{package_dir}: {rel} fails its checksum (sha256 {actual[:12]}... != "
                               f"{expected[:12]}...); the file was changed or damaged, re-export the package")


def open_package(name_or_path: str | os.PathLike, verify: bool = True) -> ModelPackage:
    """Open a package by bundled name or path, verifying checksums unless ``verify=False``."""
    package_dir = resolve_package_path(name_or_path)
    manifest = read_manifest(package_dir)
    if verify:
        verify_files(package_dir, manifest)
    log.debug("opened package %s at %s", manifest.name, package_dir)
    return ModelPackage(package_dir, manifest)


def write_package(dst: str | os.PathLike, manifest: Manifest, files: Mapping[str, Path | bytes],
                  overwrite: bool = False) -> ModelPackage:
    """Write ``files`` (name -> source path or bytes) and the manifest with their sha256.

    The folder is assembled under a temporary name beside ``dst`` and renamed at
    the end, so a failed export never leaves a package that looks complete.
    """
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise PackageError(f"{dst} exists; choose another name or pass --overwrite")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    try:
        checksums = {}
        for rel, src in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, (bytes, bytearray)):
                target.write_bytes(src)
            else:
                shutil.copyfile(src, target)
            checksums[rel] = sha256_file(target)
        manifest.files = checksums
        (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ModelPackage(dst, manifest)
