"""Model packages on disk: find, open and verify, and write.

``open_package`` checks the sha256 of every file the manifest lists before the
runtime touches it, so a tampered or truncated package is refused up front. Packages
travel between labs, so a package is also refused when its manifest names a path
outside its folder, when it holds symlinks (a checksum of a link's target says
nothing about what the link will point to tomorrow), or when a file is larger than
the size the manifest records (checked before hashing, so a swapped-in huge file
costs no time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping

from tpem_seg.errors import PackageError
from tpem_seg.models.manifest import Manifest
from tpem_seg.util.atomic import atomic_path

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SUFFIX = ".tpem"
#: manifest.json key holding the sha256 of the manifest itself (all other keys, canonical JSON).
DIGEST_KEY = "manifest_sha256"
ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
#: A manifest is a few kilobytes; anything past this is not one (refused before it is read).
MAX_MANIFEST_BYTES = 16 * 2**20


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
    def mc_dropout_path(self) -> Path | None:
        """The dropout-active ONNX graph (Monte-Carlo dropout), or None when the package has none."""
        return self.path / self.manifest.mc_dropout_file if self.manifest.mc_dropout_file else None

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


def manifest_digest(data: Mapping) -> str:
    """sha256 of a manifest's JSON object without its own digest key (sorted keys, compact)."""
    body = {k: v for k, v in data.items() if k != DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_manifest_dict(package_dir: Path) -> dict:
    """The raw JSON object of ``package_dir/manifest.json``."""
    manifest_path = package_dir / MANIFEST
    if not manifest_path.is_file():
        raise PackageError(f"{package_dir} has no {MANIFEST}; it is not a model package (re-export it)")
    if manifest_path.is_symlink():
        raise PackageError(f"{manifest_path} is a symlink; a package holds its own files: copy the package "
                           "with its files (cp -rL) or re-export it")
    size = manifest_path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise PackageError(f"{manifest_path} is {size} bytes, not a manifest (at most {MAX_MANIFEST_BYTES}); "
                           "re-export the package")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        # RecursionError: JSON nested deeper than the parser goes, never a real manifest.
        raise PackageError(f"{manifest_path} is not valid JSON ({type(err).__name__}); re-export the package") from err
    if not isinstance(data, dict):
        raise PackageError(f"{manifest_path} is not a JSON object; re-export the package")
    return data


def read_manifest(package_dir: Path) -> Manifest:
    return Manifest.from_dict(read_manifest_dict(package_dir))


def verify_manifest(package_dir: Path, data: Mapping) -> None:
    """Raise PackageError if the manifest was edited after it was written (its digest differs).

    Manifests written before the digest existed carry none and are accepted.
    """
    expected = data.get(DIGEST_KEY)
    if expected is None:
        log.debug("%s: manifest carries no %s (older package); not checked", package_dir, DIGEST_KEY)
        return
    actual = manifest_digest(data)
    if actual != expected:
        raise PackageError(f"{package_dir}: {MANIFEST} was edited after export (sha256 {actual[:12]}... != "
                           f"{str(expected)[:12]}...); re-export the package instead of editing it")


def package_file(package_dir: Path, rel: str) -> Path:
    """``package_dir / rel`` for a path a manifest names, refused unless it stays inside the package.

    Raises:
        PackageError: an empty, absolute or ``..`` path, a Windows separator, or one leading out
            through a symlink.
    """
    pure = PurePosixPath(rel) if isinstance(rel, str) else None
    if pure is None or not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel or ":" in rel:
        raise PackageError(f"{package_dir}: manifest names the file {rel!r}, which is not a plain path inside the "
                           "package; the package is damaged or hostile: re-export or re-download it")
    path = package_dir.joinpath(*pure.parts)
    try:
        path.resolve().relative_to(package_dir.resolve())
    except ValueError:
        raise PackageError(f"{package_dir}: {rel} leads outside the package (to {path.resolve()}); "
                           "re-export or re-download the package") from None
    return path


def check_no_symlinks(package_dir: Path) -> None:
    """Raise PackageError if anything inside ``package_dir`` is a symlink (the folder itself may be one)."""
    for root, dirs, files in os.walk(package_dir):
        for name in dirs + files:
            entry = Path(root) / name
            if entry.is_symlink():
                raise PackageError(f"{package_dir}: {entry.relative_to(package_dir)} is a symlink (to "
                                   f"{os.readlink(entry)}); a package holds its own files: copy it with "
                                   "`cp -rL` or re-export it")


def verify_files(package_dir: Path, manifest: Manifest) -> None:
    """Raise PackageError unless every listed file exists inside the package with its recorded size
    (where recorded) and sha256, and the package holds no symlinks.

    Files the manifest does not list (TensorRT engines under ``engines/``) are not checked here;
    engines carry their own sha256 in a sidecar, checked when they are loaded.
    """
    if manifest.onnx_file not in manifest.files:
        raise PackageError(f"{package_dir}: manifest lists no checksum for {manifest.onnx_file}; re-export it")
    for listed in (manifest.weights_file, manifest.mc_dropout_file):
        if listed and listed not in manifest.files:
            raise PackageError(f"{package_dir}: manifest lists no checksum for {listed}; re-export it")
    check_no_symlinks(package_dir)
    for rel, expected in manifest.files.items():
        path = package_file(package_dir, rel)
        if not path.is_file():
            raise PackageError(f"{package_dir}: {rel} is missing; re-export or re-download the package")
        recorded = manifest.file_sizes.get(rel)
        size = path.stat().st_size
        if recorded is not None and size != recorded:
            raise PackageError(f"{package_dir}: {rel} is {size} bytes but the manifest says {recorded}; the file "
                               "was changed or damaged, re-export or re-download the package")
        actual = sha256_file(path)
        if actual != expected:
            raise PackageError(f"{package_dir}: {rel} fails its checksum (sha256 {actual[:12]}... != "
                               f"{expected[:12]}...); the file was changed or damaged, re-export the package")


def open_package(name_or_path: str | os.PathLike, verify: bool = True) -> ModelPackage:
    """Open a package by bundled name or path, verifying checksums unless ``verify=False``."""
    package_dir = resolve_package_path(name_or_path)
    data = read_manifest_dict(package_dir)
    if verify:
        verify_manifest(package_dir, data)
    manifest = Manifest.from_dict(data)
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
    with atomic_path(dst, folder=True) as tmp:
        checksums, sizes = {}, {}
        for rel, src in files.items():
            target = package_file(tmp, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, (bytes, bytearray)):
                target.write_bytes(src)
            else:
                shutil.copyfile(src, target)
            checksums[rel] = sha256_file(target)
            sizes[rel] = target.stat().st_size
        manifest.files = checksums
        manifest.file_sizes = sizes
        data = manifest.to_dict()
        data[DIGEST_KEY] = manifest_digest(data)
        (tmp / MANIFEST).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return ModelPackage(dst, manifest)
