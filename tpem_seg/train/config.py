"""Typed training configs: dataclasses read from TOML or YAML, overridden from the command line.

Every checkpoint stores its config as a plain dict (:func:`to_dict`), and
:func:`from_dict` rebuilds the dataclass from it, so a run can be repeated or
resumed from its checkpoint alone. No torch here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from tpem_seg.errors import TpemSegError
from tpem_seg.models.config import UNETRConfig
from tpem_seg.models.manifest import NormalizationSpec
from tpem_seg.models.registry import get_config

T = TypeVar("T")

MASKINGS = ("random", "intensity", "channel")
MASK_SPACES = ("auto", "token", "input")
LABEL_UNITS = ("region", "volume")


@dataclass
class VolumeSpec:
    """One volume on disk: the image, optionally its labels, and how to read them.

    ``labels`` holds class indices (or any nonzero = foreground with ``binary_labels``).
    ``axes``/``spacing`` override the file's metadata; ``channels`` picks and orders
    the image channels the network takes (default: all).
    """

    image: str
    labels: str | None = None
    axes: str | None = None
    spacing: tuple[float, float, float] | None = None
    channels: list[int] | None = None
    name: str | None = None


@dataclass
class SimulatedSpec:
    """Simulated volumes made on the fly (:func:`tpem_seg.sim.simulate_volume`).

    ``count`` volumes with seeds ``seed, seed + 1, ...``; ``channels`` picks the
    simulator's channels (0 vessel, 1 neuron) the network takes.
    """

    count: int = 0
    shape: tuple[int, int, int] = (16, 128, 128)
    spacing: tuple[float, float, float] = (5.0, 1.0, 1.0)
    seed: int = 1000
    channels: list[int] = field(default_factory=lambda: [0, 1])
    with_labels: bool = False


@dataclass
class AugmentConfig:
    """Random augmentation of training patches (after normalisation, so intensities are ~[0, 1]).

    flips: mirror each spatial axis with probability 1/2.
    rotate90: rotate in the y-x plane by k * 90 degrees (k uniform in 0..3; only 0/2 if H != W).
    scale, shift: per-channel intensity ``x * U(scale) + U(shift)``.
    noise_std: upper bound of the std of added Gaussian noise, drawn per patch from U(0, noise_std).
    """

    flips: bool = True
    rotate90: bool = True
    scale: tuple[float, float] = (0.85, 1.15)
    shift: tuple[float, float] = (-0.1, 0.1)
    noise_std: float = 0.03
    enabled: bool = True


@dataclass
class CommonConfig:
    """Fields shared by pretraining and fine-tuning.

    dropout_rate: the ViT's dropout (MONAI UNETR ``dropout_rate``: token, attention and MLP
        dropout), replacing the named config's; a package trained with it can run Monte-Carlo
        dropout passes for an uncertainty map (``tpem-seg run --uncertainty``).
    """

    model: str = "unetr-t16"
    dropout_rate: float | None = None
    in_channels: int = 1
    train: list[VolumeSpec] = field(default_factory=list)
    simulated: SimulatedSpec = field(default_factory=SimulatedSpec)
    normalization: NormalizationSpec = field(default_factory=NormalizationSpec)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.01
    warmup_steps: int = 50
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    amp: bool = True
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    out: str = "runs/train"
    resume: bool = False
    log_every: int = 20
    save_every: int = 0
    progress: bool = True

    def check(self, in_memory_volumes: int = 0) -> None:
        """Raise TpemSegError for values no run could use (``in_memory_volumes``: arrays passed in Python)."""
        for name in ("steps", "batch_size", "grad_accum", "in_channels"):
            if getattr(self, name) < 1:
                raise TpemSegError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.lr <= 0:
            raise TpemSegError(f"lr must be positive (got {self.lr})")
        if self.dropout_rate is not None and not 0.0 <= self.dropout_rate < 1.0:
            raise TpemSegError(f"dropout_rate {self.dropout_rate} must be in [0, 1), e.g. --set dropout_rate=0.1")
        if not self.train and self.simulated.count == 0 and not in_memory_volumes:
            raise TpemSegError("no training data: list volumes under [[train]] in the config, or set "
                               "simulated.count")

    def model_config(self, **overrides: Any) -> UNETRConfig:
        """The network's config: the named ``model`` with ``in_channels``, ``dropout_rate`` (when set)
        and ``overrides`` replaced."""
        if self.dropout_rate is not None:
            overrides.setdefault("dropout_rate", self.dropout_rate)
        return get_config(self.model, in_channels=self.in_channels, **overrides)


@dataclass
class PretrainConfig(CommonConfig):
    """Masked image modelling: reconstruct masked patches of unlabelled volumes.

    masking: ``random``, ``intensity`` or ``channel`` (see :mod:`tpem_seg.train.masking`).
    channel_draw: how each channel's mask is drawn under ``channel``: ``random`` or ``intensity``.
    mask_ratio: fraction of mask patches masked (per channel under ``channel``).
    mask_patch: mask-patch size (D, H, W) in voxels; must divide the tile.
    mask_space: ``token`` (SimMIM: masked ViT tokens replaced by a learnable token; needs
        mask patches that are multiples of 16 and one mask for all channels), ``input``
        (masked voxels replaced by a learnable value per channel), or ``auto`` (token where
        possible, else input).
    intensity_sharpness, intensity_floor: the intensity rule's exponent and floor (see masking).
    """

    out: str = "runs/pretrain"
    masking: str = "random"
    channel_draw: str = "random"
    mask_ratio: float = 0.6
    mask_patch: tuple[int, int, int] = (16, 16, 16)
    mask_space: str = "auto"
    intensity_sharpness: float = 1.0
    intensity_floor: float = 0.05
    lr: float = 5e-4

    def check(self, in_memory_volumes: int = 0) -> None:
        super().check(in_memory_volumes)
        if self.masking not in MASKINGS:
            raise TpemSegError(f"masking {self.masking!r} unknown; use one of {', '.join(MASKINGS)}")
        if self.channel_draw not in ("random", "intensity"):
            raise TpemSegError(f"channel_draw {self.channel_draw!r} unknown; use random or intensity")
        if not 0.0 < self.mask_ratio < 1.0:
            raise TpemSegError(f"mask ratio {self.mask_ratio} must be in (0, 1), e.g. --mask-ratio 0.6")
        if self.mask_space not in MASK_SPACES:
            raise TpemSegError(f"mask_space {self.mask_space!r} unknown; use one of {', '.join(MASK_SPACES)}")


@dataclass
class FinetuneConfig(CommonConfig):
    """Supervised segmentation, optionally from a pretrained encoder.

    classes: class names, background first; labels hold their indices.
    binary_labels: labels are ``> 0`` -> class 1 (vessel masks stored as 0/255).
    pretrained: a ``pretrain`` checkpoint whose encoder initialises the UNETR's ViT.
    label_fraction: the share of the annotation used. With ``label_unit = "region"`` each
        training volume keeps its labels in that share of full-depth y-x columns of
        ``region_size`` voxels (the rest is ignored by the loss); with ``"volume"`` that share
        of the labelled volumes is kept (at least one).
    foreground_prob: probability that a patch is centred on a foreground voxel (nnU-Net's
        oversampling), else on any annotated voxel.
    val: volumes with labels for validation by sliding window; the best checkpoint by their
        mean foreground Dice is kept as ``best.pt`` (without ``val``: the last one).
    """

    out: str = "runs/finetune"
    classes: list[str] = field(default_factory=lambda: ["background", "vessel"])
    binary_labels: bool = True
    pretrained: str | None = None
    label_fraction: float = 1.0
    label_unit: str = "region"
    region_size: tuple[int, int] = (128, 128)
    foreground_prob: float = 0.5
    val: list[VolumeSpec] = field(default_factory=list)
    val_every: int = 100
    val_overlap: float = 0.25
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    encoder_lr_scale: float = 1.0
    lr: float = 3e-3  # UNETR with AdamW learns slowly at 1e-3 in short runs (see docs/label_efficiency.md)
    spacing: tuple[float, float, float] | None = None

    def check(self, in_memory_volumes: int = 0) -> None:
        super().check(in_memory_volumes)
        if not 0.0 < self.label_fraction <= 1.0:
            raise TpemSegError(f"label fraction {self.label_fraction} must be in (0, 1], e.g. --label-fraction 0.25")
        if self.label_unit not in LABEL_UNITS:
            raise TpemSegError(f"label_unit {self.label_unit!r} unknown; use region or volume")
        if len(self.classes) < 2:
            raise TpemSegError(f"classes {self.classes} must name background and at least one class")


@dataclass
class EvaluateConfig:
    """Segment labelled volumes with a fine-tuned checkpoint and score them.

    binary_labels: None takes the checkpoint's setting.
    save_predictions: a folder for ``NAME_labels.tif`` of every volume (None: none written).
    """

    checkpoint: str = ""
    volumes: list[VolumeSpec] = field(default_factory=list)
    overlap: float = 0.25
    batch_size: int = 2
    device: str = "auto"
    threads: int | None = None
    binary_labels: bool | None = None
    out: str | None = None
    save_predictions: str | None = None
    progress: bool = True

    def check(self) -> None:
        if not self.checkpoint:
            raise TpemSegError("no checkpoint to evaluate; pass --checkpoint PATH")
        if not self.volumes:
            raise TpemSegError("no volumes to evaluate; list them under [[volumes]] in the config or pass --volume")
        missing = [v.labels for v in self.volumes if not v.labels]
        if missing:
            raise TpemSegError("every volume to evaluate needs labels; add labels = PATH to each [[volumes]] entry")


# --- dict <-> dataclass ----------------------------------------------------------------------


def to_dict(config: Any) -> dict[str, Any]:
    """A plain dict (lists, no tuples) of a config dataclass, for checkpoints and JSON."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, converting nested dataclasses, tuples and lists.

    Unknown keys raise TpemSegError naming them (a typo should not be silently ignored).
    """
    if not isinstance(data, Mapping):
        raise TpemSegError(f"{where} must be a table of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TpemSegError(f"unknown key(s) {unknown} in {where}; known: {sorted(known)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise TpemSegError(f"{where}: {err}") from err


def _convert(hint: Any, value: Any, where: str) -> Any:
    """``value`` as type ``hint`` (dataclass, list[...], tuple[...], Optional, scalars)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if hint is NormalizationSpec:
            return NormalizationSpec(**value)
        return from_dict(hint, value, where)
    if origin in (list, Sequence):
        if not isinstance(value, (list, tuple)):
            raise TpemSegError(f"{where} must be a list, got {value!r}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise TpemSegError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_scalar(args[0], v, where) for v in value)
        if len(value) != len(args):
            raise TpemSegError(f"{where} must have {len(args)} values, got {list(value)}")
        return tuple(_scalar(a, v, where) for a, v in zip(args, value))
    return _scalar(hint, value, where)


def _scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is Any or value is None:
        return value
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise TpemSegError(f"{where} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        try:
            converted = hint(value)
        except (TypeError, ValueError):
            raise TpemSegError(f"{where} must be a number, got {value!r}") from None
        if hint is int and isinstance(value, float) and converted != value:
            raise TpemSegError(f"{where} must be a whole number, got {value!r}")
        return converted
    if hint is str:
        return str(value)
    return value


# --- files and overrides ---------------------------------------------------------------------


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The table in a ``.toml``, ``.yaml`` or ``.yml`` file. Relative volume paths stay as written."""
    path = Path(path)
    if not path.is_file():
        raise TpemSegError(f"no such config file: {path}; check the path")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise TpemSegError(f"{path} is not valid TOML ({err}); fix the file") from err
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise TpemSegError(f"{path} is not valid YAML ({str(err).splitlines()[0]}); fix the file") from err
        return data or {}
    raise TpemSegError(f"config {path} must end in .toml, .yaml or .yml")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], value), the value parsed as YAML (numbers, lists, true...)."""
    import yaml

    if "=" not in text:
        raise TpemSegError(f"override {text!r} must look like key=value, e.g. --set steps=200")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_override(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``data[k0][k1]... = value``, creating tables on the way."""
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise TpemSegError(f"cannot set {'.'.join(keys)}: {k} is not a table")
    node[keys[-1]] = value


def load_config(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                sets: Sequence[str] = ()) -> T:
    """The config ``cls`` from an optional file, then ``sets`` (``key=value``), then ``overrides``.

    ``overrides`` maps field names to values already typed (from dedicated CLI flags);
    None values are skipped, so unset flags leave the file's values alone.
    """
    data: dict[str, Any] = read_config_file(path) if path else {}
    for text in sets:
        keys, value = parse_override(text)
        apply_override(data, keys, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            apply_override(data, key.split("."), value)
    config = from_dict(cls, data, where=cls.__name__)
    check = getattr(config, "check", None)
    if check is not None:
        check()
    return config
