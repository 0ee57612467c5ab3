"""What an export starts from: a tpem-seg checkpoint, or a plain MONAI UNETR state dict plus its arguments.

A tpem-seg checkpoint (:mod:`tpem_seg.models.checkpoint`, kind ``finetune``) carries its config
and metadata. A plain state dict (``torch.save(model.state_dict())``, possibly wrapped in
``{"state_dict": ...}`` and with the ``module.`` prefix ``DataParallel`` leaves) carries only
weights, so its MONAI ``UNETR`` constructor arguments come from :class:`ArchOptions`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from tpem_seg.export.errors import ExportError
from tpem_seg.models.checkpoint import FORMAT as CHECKPOINT_FORMAT
from tpem_seg.models.checkpoint import VERSION as CHECKPOINT_VERSION
from tpem_seg.models.checkpoint import clean_state_dict, read_torch_file
from tpem_seg.models.package import sha256_file
from tpem_seg.models.config import UNETRConfig
from tpem_seg.models.registry import get_config, list_models
from tpem_seg.errors import TpemSegError

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ArchOptions:
    """MONAI ``UNETR`` constructor arguments for a plain state dict (None: MONAI's default / the base config).

    ``arch`` is ``"unetr"`` (MONAI's defaults: ViT-B, feature_size 16, instance norm, residual
    blocks, ``proj_type="conv"``) or a registered config name such as ``"unetr-s16"``.
    ``classes`` is MONAI's ``out_channels``; ``tile`` its ``img_size`` (D, H, W).
    """

    arch: str | None = None
    in_channels: int | None = None
    classes: int | None = None
    tile: tuple[int, int, int] | None = None
    feature_size: int | None = None
    hidden_size: int | None = None
    mlp_dim: int | None = None
    num_heads: int | None = None
    proj_type: str | None = None
    norm_name: str | None = None
    res_block: bool | None = None
    conv_block: bool | None = None
    qkv_bias: bool | None = None

    def overrides(self) -> dict[str, Any]:
        """The given arguments as :class:`UNETRConfig` fields."""
        names = {"classes": "out_channels"}
        return {names.get(f.name, f.name): getattr(self, f.name) for f in fields(self)
                if f.name != "arch" and getattr(self, f.name) is not None}

    def given(self) -> list[str]:
        """Command-line flags of the given arguments, e.g. ``["--hidden-size"]``."""
        return [f"--{f.name.replace('_', '-')}" for f in fields(self) if getattr(self, f.name) is not None]

    def config(self) -> UNETRConfig:
        """The UNETR config these arguments describe (needs ``arch``, ``in_channels``, ``classes``, ``tile``)."""
        missing = [flag for flag, value in (("--in-channels", self.in_channels), ("--classes", self.classes),
                                            ("--tile", self.tile)) if value is None]
        if missing:
            raise ExportError(f"a plain state dict needs its architecture: add {' '.join(missing)} "
                              f"(e.g. --arch unetr --in-channels 2 --classes 3 --tile 128,128,128)")
        base = UNETRConfig() if self.arch == "unetr" else get_config(self.arch)
        return replace(base, **self.overrides())


@dataclass
class ExportSource:
    """A network to export: its config, its weights and what is known about it."""

    config: UNETRConfig
    state_dict: dict[str, Any]
    kind: str  # "tpem-seg checkpoint" | "state dict"
    path: Path
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)


def source_from_checkpoint(path: str | Path, arch: ArchOptions = ArchOptions()) -> ExportSource:
    """Read ``path``: a tpem-seg ``finetune`` checkpoint, or (with ``arch.arch``) a plain UNETR state dict."""
    path = Path(path)
    data = read_torch_file(path)
    digest = sha256_file(path)
    if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        return _from_tpem_checkpoint(path, data, digest, arch)
    if arch.arch is None:
        raise ExportError(f"{path} is not a tpem-seg checkpoint; for a plain MONAI UNETR state dict give its "
                          f"architecture, e.g. --arch unetr --in-channels 2 --classes 3 --tile 128,128,128")
    if arch.arch != "unetr" and arch.arch not in list_models():
        raise ExportError(f"--arch {arch.arch!r} unknown; use unetr or one of {', '.join(list_models())}")
    if not isinstance(data, Mapping):
        raise ExportError(f"{path} holds a {type(data).__name__}, not a state dict; save model.state_dict()")
    config = _config_or_error(arch)
    return ExportSource(config, clean_state_dict(data), "state dict", path, digest, {})


def _config_or_error(arch: ArchOptions) -> UNETRConfig:
    try:
        return arch.config()
    except ExportError:
        raise
    except TpemSegError as err:  # UNETRConfig's own checks (tile multiple of 16, heads divide hidden size)
        raise ExportError(f"bad architecture options: {err}") from err


def _from_tpem_checkpoint(path: Path, data: dict, digest: str, arch: ArchOptions) -> ExportSource:
    if data.get("version", CHECKPOINT_VERSION) > CHECKPOINT_VERSION:
        raise ExportError(f"{path} is a newer checkpoint format ({data['version']}); upgrade tpem-seg")
    if data.get("kind") != "finetune":
        raise ExportError(f"{path} is a {data.get('kind')!r} checkpoint (the masked-image-modelling network); "
                          f"export a fine-tuned segmentation checkpoint (kind 'finetune')")
    if arch.given():
        raise ExportError(f"{path} is a tpem-seg checkpoint and carries its architecture; drop "
                          f"{' '.join(arch.given())}")
    try:
        config = UNETRConfig.from_dict(data["config"])
    except (KeyError, TypeError) as err:
        raise ExportError(f"{path}: checkpoint config is malformed ({err}); re-save the checkpoint") from err
    return ExportSource(config, clean_state_dict(data["model"]), "tpem-seg checkpoint", path, digest,
                        dict(data.get("meta", {})))


def model_from_source(source: ExportSource):
    """The MONAI UNETR (eval mode) with the source's weights loaded strictly.

    Raises ExportError naming the mismatched keys or shapes and the flags to check.
    """
    from tpem_seg.models.unetr import build_unetr

    model = build_unetr(source.config)
    expected = model.state_dict()
    problems = state_dict_problems(expected, source.state_dict)
    if problems:
        hint = ("check --in-channels, --classes, --tile, --hidden-size, --mlp-dim, --feature-size, --proj-type, "
                "--norm-name, --res-block, --qkv-bias" if source.kind == "state dict" else "the checkpoint is damaged")
        raise ExportError(f"the weights in {source.path.name} do not fit UNETR({describe_config(source.config)}): "
                          f"{problems}; {hint}")
    model.load_state_dict(source.state_dict, strict=True)
    return model.eval()


def state_dict_problems(expected: Mapping[str, Any], given: Mapping[str, Any]) -> str:
    """A short description of missing/unexpected keys and shape mismatches ('' if the dicts fit)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {tuple(given[k].shape)} != {tuple(expected[k].shape)}" for k in expected
              if k in given and hasattr(given[k], "shape") and tuple(given[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        parts.append(f"{len(shapes)} of another shape (e.g. {shapes[0]})")
    return ", ".join(parts)


def describe_config(config: UNETRConfig) -> str:
    return (f"in {config.in_channels}, out {config.out_channels}, tile {'x'.join(map(str, config.tile))}, "
            f"hidden {config.hidden_size}, mlp {config.mlp_dim}, heads {config.num_heads}, "
            f"features {config.feature_size}, {config.proj_type}, {config.norm_name}")

