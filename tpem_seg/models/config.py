"""The UNETR architecture as a value: MONAI ``UNETR``'s constructor arguments plus the tile it runs on.

Plain data (no torch), so the runtime reads it from a package manifest without a training stack;
:mod:`tpem_seg.models.unetr` builds the network from it, :mod:`tpem_seg.models.registry` names
the standard ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
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
