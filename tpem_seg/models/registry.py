"""Named network configurations, timm style: ``create_model("unetr-s16")``.

The configs are plain dataclasses (no torch), so the runtime can read them from
a package manifest without a training stack. :func:`create_model` imports torch
and MONAI only when called.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from tpem_seg.errors import TpemSegError
from tpem_seg.models.config import UNETRConfig

@dataclass(frozen=True)
class ModelSpec:
    """A named architecture config with a one-line description."""

    name: str
    config: UNETRConfig
    description: str
    architecture: str = "unetr"
    tags: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


register(ModelSpec(
    "unetr-b16",
    UNETRConfig(),
    "reference: MONAI UNETR, ViT-B (768/3072/12), 16^3 patches, 128^3 tiles, feature_size 16, "
    "instance norm, residual blocks; 2 channels (vessel, neuron) -> 3 classes",
))
register(ModelSpec(
    "unetr-s16",
    UNETRConfig(tile=(32, 128, 128), hidden_size=192, mlp_dim=768, num_heads=4, feature_size=16),
    "small for CPUs: ViT hidden 192, 32x128x128 tiles",
))
register(ModelSpec(
    "unetr-t16",
    UNETRConfig(tile=(16, 64, 64), hidden_size=96, mlp_dim=192, num_heads=4, feature_size=8),
    "tiny for thin anisotropic stacks and quick training: ViT hidden 96, 16x64x64 tiles",
))
register(ModelSpec(
    "unetr-t16w",
    UNETRConfig(tile=(16, 128, 128), hidden_size=96, mlp_dim=192, num_heads=4, feature_size=8),
    "tiny with wider tiles: unetr-t16 on 16x128x128 tiles (64 ViT tokens instead of 16); the label-efficiency study",
))
register(ModelSpec(
    "unetr-test",
    UNETRConfig(tile=(16, 32, 32), hidden_size=32, mlp_dim=64, num_heads=2, feature_size=4),
    "test-size: ViT hidden 32, 16x32x32 tiles; only for unit tests",
))


def list_models() -> list[str]:
    """Names of the registered configs."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise TpemSegError(f"unknown model config {name!r}; choose one of {', '.join(list_models())}") from None


def get_config(name: str, **overrides: Any) -> UNETRConfig:
    """The named config, with fields replaced by ``overrides`` (e.g. ``in_channels=1``)."""
    return replace(get_spec(name).config, **overrides)


def create_model(name_or_config: str | UNETRConfig, **overrides: Any):
    """Build the network (a ``torch.nn.Module``, random weights) from a name or a config."""
    from tpem_seg.models.unetr import build_unetr

    config = get_config(name_or_config, **overrides) if isinstance(name_or_config, str) else replace(
        name_or_config, **overrides)
    return build_unetr(config)
