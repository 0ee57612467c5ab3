"""Patch datasets over lists of volumes (files or arrays), for pretraining and fine-tuning.

A :class:`TrainVolume` is a whole volume normalised with the runtime's own
:func:`~tpem_seg.runtime.normalize.fit_normalizer` (so training sees exactly what
inference sees) and zero-padded, split as the runtime pads, up to the tile where it
is thinner (the real stacks have 10-25 planes). A :class:`PatchSampler` draws
random tile-sized patches from them, optionally centred on foreground, and augments
them. numpy only: the loops turn batches into tensors.

Training volumes are held in memory as float32 (a 25x512x512 stack is 26 MB).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tpem_seg.errors import InputError, TpemSegError
from tpem_seg.io import Volume, read_volume
from tpem_seg.models.manifest import NormalizationSpec
from tpem_seg.runtime.normalize import Normalizer, fit_normalizer
from tpem_seg.runtime.tiling import pad_widths
from tpem_seg.train.config import AugmentConfig, SimulatedSpec, VolumeSpec

log = logging.getLogger(__name__)

#: Label value the losses skip: voxels outside the annotated share, and padding.
IGNORE = 255
#: At most this many foreground voxel coordinates are kept per class and volume for sampling.
MAX_FG_COORDS = 200_000


@dataclass
class TrainVolume:
    """A normalised volume, padded to at least the tile.

    Attributes:
        name: for logs.
        image: ``(C, Z, Y, X)`` float32, normalised; padding is 0 (as the runtime pads).
        labels: ``(Z, Y, X)`` uint8 class indices, :data:`IGNORE` where not annotated or
            padded; None for unlabelled volumes.
        valid: ``(Z, Y, X)`` bool, False on padding.
        source: the raw (unnormalised, unpadded) volume, for sliding-window validation.
        raw_labels: ``(Z, Y, X)`` uint8 class indices of ``source``, unrestricted; or None.
        normalizer: the fitted normaliser (per channel low/high in raw intensities).
        channels: image channels of ``source`` fed to the network, in order (None: all).
    """

    name: str
    image: np.ndarray
    labels: np.ndarray | None
    valid: np.ndarray
    source: Volume
    raw_labels: np.ndarray | None
    normalizer: Normalizer
    channels: list[int] | None = None
    fg_coords: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Padded spatial shape ``(Z, Y, X)``."""
        return tuple(self.image.shape[1:])  # type: ignore[return-value]

    @property
    def annotated_voxels(self) -> int:
        return 0 if self.labels is None else int(np.count_nonzero(self.labels != IGNORE))


# --- loading -------------------------------------------------------------------------------------


def binarize(labels: np.ndarray) -> np.ndarray:
    """Foreground ``> 0`` as class 1: ``(Z, Y, X)`` uint8 in {0, 1}."""
    return (np.asarray(labels) > 0).astype(np.uint8)


def read_labels(path: str | Path, shape: Sequence[int], binary: bool, n_classes: int) -> np.ndarray:
    """Labels ``(Z, Y, X)`` uint8 from a file, checked against the image's spatial ``shape``."""
    volume = read_volume(path)
    if volume.n_channels != 1:
        raise InputError(f"labels {path} have {volume.n_channels} channels; give one class-index volume")
    labels = volume.read_czyx()[0]
    return check_labels(labels, shape, binary, n_classes, str(path))


def check_labels(labels: np.ndarray, shape: Sequence[int], binary: bool, n_classes: int,
                 source: str = "labels") -> np.ndarray:
    """``labels`` as uint8 class indices, raising InputError on a shape or class mismatch."""
    if tuple(labels.shape) != tuple(shape):
        raise InputError(f"{source} have shape {tuple(labels.shape)} but the image is {tuple(shape)} (Z, Y, X); "
                         f"give the labels of this image")
    if binary:
        return binarize(labels)
    top = int(labels.max()) if labels.size else 0
    if top >= n_classes:
        raise InputError(f"{source} hold class {top} but the model has {n_classes} classes; set classes in the "
                         f"config, or binary_labels = true for a 0/255 mask")
    return labels.astype(np.uint8)


def read_spec(spec: VolumeSpec) -> Volume:
    """The raw volume a :class:`VolumeSpec` names (lazy)."""
    return read_volume(spec.image, axes=spec.axes, spacing=spec.spacing)


def prepare_volume(volume: Volume, labels: np.ndarray | None, name: str, tile: Sequence[int],
                   normalization: NormalizationSpec, in_channels: int,
                   channels: Sequence[int] | None = None) -> TrainVolume:
    """Normalise (runtime code) and pad ``volume``; ``labels`` are ``(Z, Y, X)`` class indices or None."""
    n = len(channels) if channels is not None else volume.n_channels
    if n != in_channels:
        raise InputError(f"{name} gives {n} channel(s) but the model takes {in_channels}; pick them with "
                         f"channels = [...] in its volume entry, or set in_channels")
    normalizer = fit_normalizer(volume, normalization, channels)
    image = normalizer(volume.read_czyx(0, None, channels))
    pads = pad_widths(image.shape[1:], tile)
    padded_image = np.pad(image, [(0, 0), *pads])
    valid = np.pad(np.ones(image.shape[1:], dtype=bool), pads)
    padded_labels = None if labels is None else np.pad(labels, pads, constant_values=IGNORE)
    tv = TrainVolume(name, padded_image, padded_labels, valid, volume, labels, normalizer,
                     list(channels) if channels is not None else None)
    refresh_foreground(tv)
    return tv


def array_volume(image: np.ndarray, labels: np.ndarray | None = None, *, tile: Sequence[int],
                 axes: str = "CZYX", spacing: Sequence[float] | None = None, name: str = "array",
                 normalization: NormalizationSpec = NormalizationSpec(), binary_labels: bool = False,
                 n_classes: int = 2, channels: Sequence[int] | None = None) -> TrainVolume:
    """A training volume from arrays: ``image`` with ``axes`` (e.g. ``(C, Z, Y, X)``), raw intensities;
    ``labels`` ``(Z, Y, X)`` class indices (or a mask with ``binary_labels``) or None."""
    volume = Volume(image, axes, spacing)
    if labels is not None:
        labels = check_labels(np.asarray(labels), volume.shape_zyx, binary_labels, n_classes, name)
    n = len(channels) if channels is not None else volume.n_channels
    return prepare_volume(volume, labels, name, tile, normalization, n, channels)


def load_volumes(specs: Sequence[VolumeSpec], tile: Sequence[int], normalization: NormalizationSpec,
                 in_channels: int, binary_labels: bool = True, n_classes: int = 2,
                 need_labels: bool = False) -> list[TrainVolume]:
    """Read, normalise and pad every volume in ``specs``."""
    volumes = []
    for spec in specs:
        volume = read_spec(spec)
        if need_labels and not spec.labels:
            raise TpemSegError(f"{spec.image} has no labels; add labels = PATH to its entry")
        labels = read_labels(spec.labels, volume.shape_zyx, binary_labels, n_classes) if spec.labels else None
        name = spec.name or Path(spec.image).name
        volumes.append(prepare_volume(volume, labels, name, tile, normalization, in_channels, spec.channels))
        log.info("loaded %s: %s voxels, %d channel(s)%s", name, "x".join(map(str, volume.shape_zyx)),
                 in_channels, ", labelled" if labels is not None else "")
    return volumes


def simulated_volumes(spec: SimulatedSpec, tile: Sequence[int], normalization: NormalizationSpec,
                      in_channels: int, binary_labels: bool = False, n_classes: int = 3) -> list[TrainVolume]:
    """``spec.count`` simulated volumes (seeds ``spec.seed + i``), labelled if ``spec.with_labels``."""
    from tpem_seg.sim import simulate_volume

    volumes = []
    for i in range(spec.count):
        sim = simulate_volume(tuple(spec.shape), tuple(spec.spacing), seed=spec.seed + i)
        labels = check_labels(sim.labels, sim.labels.shape, binary_labels, n_classes) if spec.with_labels else None
        volume = Volume(sim.image, "CZYX", sim.spacing, list(sim.channel_names))
        volumes.append(prepare_volume(volume, labels, f"sim{spec.seed + i}", tile, normalization, in_channels,
                                      spec.channels))
    return volumes


# --- label fraction --------------------------------------------------------------------------------


def keep_count(n: int, fraction: float) -> int:
    """``round(fraction * n)``, at least 1."""
    return max(1, int(round(fraction * n)))


def choose_volumes(volumes: Sequence[TrainVolume], fraction: float, rng: np.random.Generator) -> list[TrainVolume]:
    """A random ``fraction`` of the labelled volumes (at least one), in their original order."""
    labelled = [v for v in volumes if v.labels is not None]
    if fraction >= 1.0:
        return labelled
    keep = sorted(rng.choice(len(labelled), size=keep_count(len(labelled), fraction), replace=False))
    return [labelled[i] for i in keep]


def region_grid(shape_yx: Sequence[int], region: Sequence[int]) -> list[tuple[slice, slice]]:
    """Full-depth y-x columns tiling a plane of ``shape_yx`` with blocks of about ``region`` voxels."""
    ny, nx = (max(1, int(round(s / r))) for s, r in zip(shape_yx, region))
    ys = np.linspace(0, shape_yx[0], ny + 1).round().astype(int)
    xs = np.linspace(0, shape_yx[1], nx + 1).round().astype(int)
    return [(slice(ys[i], ys[i + 1]), slice(xs[j], xs[j + 1])) for i in range(ny) for j in range(nx)]


def restrict_to_regions(volume: TrainVolume, fraction: float, region: Sequence[int],
                        rng: np.random.Generator) -> tuple[TrainVolume, int]:
    """A copy of ``volume`` whose labels are kept only in a random ``fraction`` of its y-x columns.

    The columns tile the unpadded plane (see :func:`region_grid`); labels elsewhere become
    :data:`IGNORE`. The input is left untouched (it may be reused with another seed).
    Returns the copy and the number of columns kept.
    """
    if volume.labels is None or fraction >= 1.0:
        return volume, 0
    # Padding to the padded shape reproduces the widths used when the volume was prepared.
    _, (py, _), (px, _) = pad_widths(volume.source.shape_zyx, volume.shape)
    _, y, x = volume.source.shape_zyx
    cells = region_grid((y, x), region)
    keep = rng.choice(len(cells), size=keep_count(len(cells), fraction), replace=False)
    annotated = np.zeros(volume.labels.shape[1:], dtype=bool)
    for i in keep:
        sy, sx = cells[i]
        annotated[py + sy.start:py + sy.stop, px + sx.start:px + sx.stop] = True
    labels = volume.labels.copy()
    labels[:, ~annotated] = IGNORE
    restricted = dataclasses.replace(volume, labels=labels)
    refresh_foreground(restricted)
    return restricted, len(keep)


def apply_label_fraction(volumes: Sequence[TrainVolume], fraction: float, unit: str, region: Sequence[int],
                         rng: np.random.Generator) -> list[TrainVolume]:
    """The labelled volumes restricted to ``fraction`` of the annotation (see ``FinetuneConfig``)."""
    if unit == "volume":
        kept = choose_volumes(volumes, fraction, rng)
        log.info("label fraction %.2f by volume: %s", fraction, ", ".join(v.name for v in kept))
        return kept
    kept = []
    for v in volumes:
        if v.labels is None:
            continue
        restricted, n = restrict_to_regions(v, fraction, region, rng)
        kept.append(restricted)
        if fraction < 1.0:
            log.info("label fraction %.2f by region: %s keeps %d column(s), %.1f%% of its voxels annotated",
                     fraction, v.name, n, 100.0 * restricted.annotated_voxels / v.valid.sum())
    return kept


def refresh_foreground(volume: TrainVolume, rng_seed: int = 0) -> None:
    """Recompute the per-class foreground coordinates used to centre patches (subsampled)."""
    volume.fg_coords = {}
    if volume.labels is None:
        return
    rng = np.random.default_rng(rng_seed)
    for cls in np.unique(volume.labels):
        if cls == 0 or cls == IGNORE:
            continue
        coords = np.argwhere(volume.labels == cls).astype(np.int32)
        if len(coords) > MAX_FG_COORDS:
            coords = coords[rng.choice(len(coords), MAX_FG_COORDS, replace=False)]
        volume.fg_coords[int(cls)] = coords


# --- sampling --------------------------------------------------------------------------------------


@dataclass
class Batch:
    """A batch of patches: ``image (N, C, D, H, W)`` float32, ``labels (N, D, H, W)`` uint8 or None,
    ``valid (N, D, H, W)`` bool (False on padding)."""

    image: np.ndarray
    labels: np.ndarray | None
    valid: np.ndarray


class PatchSampler:
    """Random tile-sized patches from a list of volumes, with augmentation.

    Volumes are chosen with probability proportional to their annotated voxels
    (labelled) or all voxels (unlabelled), so every annotated voxel is equally likely.
    With ``labelled``, a patch is centred on a foreground voxel with probability
    ``foreground_prob`` (a foreground class chosen uniformly), else on a random
    annotated voxel, so it always overlaps the annotation.
    """

    def __init__(self, volumes: Sequence[TrainVolume], tile: Sequence[int], rng: np.random.Generator,
                 labelled: bool = False, foreground_prob: float = 0.0, augment: AugmentConfig | None = None):
        if not volumes:
            raise TpemSegError("no volumes to sample patches from; check the training data in the config")
        self.volumes = list(volumes)
        self.tile = tuple(int(t) for t in tile)
        self.rng = rng
        self.labelled = labelled
        self.foreground_prob = foreground_prob
        self.augment = augment
        sizes = np.array([v.annotated_voxels if labelled else v.valid.sum() for v in self.volumes], dtype=float)
        if sizes.sum() <= 0:
            raise TpemSegError("the training volumes hold no annotated voxels; check their labels")
        self.weights = sizes / sizes.sum()

    def batch(self, n: int) -> Batch:
        patches = [self.sample() for _ in range(n)]
        labels = np.stack([p[1] for p in patches]) if self.labelled else None
        return Batch(np.stack([p[0] for p in patches]), labels, np.stack([p[2] for p in patches]))

    def sample(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """One patch: image ``(C, D, H, W)``, labels ``(D, H, W)`` or None, valid ``(D, H, W)``."""
        volume = self.volumes[self.rng.choice(len(self.volumes), p=self.weights)]
        origin = self._origin(volume)
        window = tuple(slice(o, o + t) for o, t in zip(origin, self.tile))
        image = volume.image[(slice(None), *window)].copy()
        labels = volume.labels[window].copy() if self.labelled else None
        valid = volume.valid[window].copy()
        if self.augment is not None and self.augment.enabled:
            image, labels, valid = augment_patch(image, labels, valid, self.augment, self.rng)
        return image, labels, valid

    def _origin(self, volume: TrainVolume) -> tuple[int, int, int]:
        if not self.labelled:
            return tuple(int(self.rng.integers(0, s - t + 1)) for s, t in zip(volume.shape, self.tile))
        if volume.fg_coords and self.rng.random() < self.foreground_prob:
            cls = list(volume.fg_coords)[self.rng.integers(len(volume.fg_coords))]
            coords = volume.fg_coords[cls]
            centre = coords[self.rng.integers(len(coords))]
        else:
            centre = self._annotated_voxel(volume)
        return tuple(int(np.clip(c - t // 2, 0, s - t)) for c, t, s in zip(centre, self.tile, volume.shape))

    def _annotated_voxel(self, volume: TrainVolume) -> np.ndarray:
        """A uniformly random annotated voxel (rejection sampling; the annotated share is >= a few %)."""
        for _ in range(1000):
            voxel = np.array([self.rng.integers(s) for s in volume.shape])
            if volume.labels[tuple(voxel)] != IGNORE:
                return voxel
        annotated = np.argwhere(volume.labels != IGNORE)
        return annotated[self.rng.integers(len(annotated))]


def augment_patch(image: np.ndarray, labels: np.ndarray | None, valid: np.ndarray, cfg: AugmentConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Flips, in-plane 90° rotations, per-channel intensity scale/shift, Gaussian noise.

    ``image (C, D, H, W)``, ``labels (D, H, W)`` or None, ``valid (D, H, W)``; spatial
    transforms apply to all three, intensity ones to the image only, and padding
    (``~valid``) stays 0 as the runtime pads.
    """
    if cfg.flips:
        for axis in range(3):
            if rng.random() < 0.5:
                image, valid = np.flip(image, axis + 1), np.flip(valid, axis)
                labels = None if labels is None else np.flip(labels, axis)
    if cfg.rotate90:
        square = image.shape[-1] == image.shape[-2]
        k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
        image, valid = np.rot90(image, k, axes=(-2, -1)), np.rot90(valid, k, axes=(-2, -1))
        labels = None if labels is None else np.rot90(labels, k, axes=(-2, -1))
    image = np.ascontiguousarray(image, dtype=np.float32)
    c = image.shape[0]
    scale = rng.uniform(*cfg.scale, size=(c, 1, 1, 1)).astype(np.float32)
    shift = rng.uniform(*cfg.shift, size=(c, 1, 1, 1)).astype(np.float32)
    image = image * scale + shift
    if cfg.noise_std > 0:
        image += rng.normal(0.0, rng.uniform(0, cfg.noise_std), size=image.shape).astype(np.float32)
    valid = np.ascontiguousarray(valid)
    image *= valid[None]
    labels = None if labels is None else np.ascontiguousarray(labels)
    return image, labels, valid
