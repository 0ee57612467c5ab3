"""Named network configurations, timm style: ``create_model("unetr-s16")``.

The configs are plain dataclasses (no torch), so the runtime can read them from
a package manifest without a training stack. :func:`create_model` imports torch
and MONAI only when called.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from tpem_seg.errors import TpemSegError

#: MONAI's UNETR fixes its ViT patch size at 16 voxels per axis.
PATCH = 16


@dataclass(frozen=True)
class UNETRConfig:
    """Constructor arguments of MONAI's ``UNETR`` plus the tile it runs on.

    ``tile`` is the network input size ``(D, H, W)`` in voxels; each side must be
    a multiple of 16 (the ViT patch size).
    """

    in_channels: int = 2
    out_channels: int = 3
    tile: tuple[int, int, int] = (128, 128, 128)
    feature_size: int = 16
    hidden_size: int = 768
    mlp_dim: int = 3072
    num_heads: int = 12
    proj_type: str = "conv"
    norm_name: str = "instance"
    res_block: bool = True
    conv_block: bool = True
    dropout_rate: float = 0.0
    qkv_bias: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tile", tuple(int(t) for t in self.tile))
        if len(self.tile) != 3 or any(t <= 0 or t % PATCH for t in self.tile):
            raise TpemSegError(f"tile {self.tile} must be three positive multiples of {PATCH} (D,H,W)")
        if self.hidden_size % self.num_heads:
            raise TpemSegError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")

    @property
    def patch_grid(self) -> tuple[int, int, int]:
        return tuple(t // PATCH for t in self.tile)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tile"] = list(self.tile)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNETRConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise TpemSegError(f"unknown UNETR config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


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


def unetr_kwargs(config: UNETRConfig) -> dict[str, Any]:
    """Keyword arguments of ``monai.networks.nets.UNETR`` for ``config`` (JSON-serialisable).

    The one mapping from a config to MONAI's constructor: the model builder and the
    bioimage.io export (which names MONAI's class as the architecture) both use it.
    """
    return {"in_channels": config.in_channels, "out_channels": config.out_channels, "img_size": list(config.tile),
            "feature_size": config.feature_size, "hidden_size": config.hidden_size, "mlp_dim": config.mlp_dim,
            "num_heads": config.num_heads, "proj_type": config.proj_type, "norm_name": config.norm_name,
            "conv_block": config.conv_block, "res_block": config.res_block, "dropout_rate": config.dropout_rate,
            "spatial_dims": 3, "qkv_bias": config.qkv_bias}


def create_model(name_or_config: str | UNETRConfig, **overrides: Any):
    """Build the network (a ``torch.nn.Module``, random weights) from a name or a config."""
    from tpem_seg.models.unetr import build_unetr

    config = get_config(name_or_config, **overrides) if isinstance(name_or_config, str) else replace(
        name_or_config, **overrides)
    return build_unetr(config)
