"""The model-package manifest: everything the runtime needs to run a network.

A package is a folder ``NAME.tpem/`` holding ``manifest.json``, ``model.onnx``,
optionally ``model.pt`` (PyTorch weights) and ``engines/`` (TensorRT plans
cached per machine). The manifest is plain JSON; these dataclasses give it types
and checks. No torch here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from tpem_seg.errors import PackageError, TpemSegError
from tpem_seg.models.config import UNETRConfig

FORMAT_VERSION = 1
NORMALIZATION_MODES = ("percentile", "range", "none")


@dataclass(frozen=True)
class NormalizationSpec:
    """Per-channel intensity normalisation, computed over the whole volume.

    - ``percentile``: the ``percentiles`` (low, high) of each channel, estimated
      from a sample of the volume, map to 0 and 1.
    - ``range``: the fixed intensities ``range`` (low, high) map to 0 and 1.
    - ``none``: values pass through as float32.
    With ``clip``, normalised values are clipped to [0, 1] (not for ``none``).
    """

    mode: str = "percentile"
    percentiles: tuple[float, float] = (1.0, 99.8)
    range: tuple[float, float] = (0.0, 1.0)
    clip: bool = True

    def __post_init__(self) -> None:
        if self.mode not in NORMALIZATION_MODES:
            raise PackageError(f"normalization mode {self.mode!r} unknown; use one of {NORMALIZATION_MODES}")
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))
        object.__setattr__(self, "range", tuple(float(r) for r in self.range))
        if len(self.percentiles) != 2 or len(self.range) != 2:
            raise PackageError(f"percentiles {self.percentiles} and range {self.range} must be two numbers (low, high)")
        if not all(math.isfinite(v) for v in self.range):
            raise PackageError(f"intensity range {self.range} must be finite")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise PackageError(f"percentiles {self.percentiles} must satisfy 0 <= low < high <= 100")
        if not self.range[0] < self.range[1]:
            raise PackageError(f"intensity range {self.range} must have low < high")

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "percentiles": list(self.percentiles), "range": list(self.range),
                "clip": self.clip}


@dataclass
class Manifest:
    """Typed view of ``manifest.json``."""

    name: str
    config: UNETRConfig
    channels: list[str]
    classes: list[str]
    version: str = "0.1.0"
    description: str = ""
    architecture: str = "unetr"
    spacing: tuple[float, float, float] | None = None
    normalization: NormalizationSpec = field(default_factory=NormalizationSpec)
    activation: str = "softmax"
    onnx_file: str = "model.onnx"
    onnx_opset: int = 17
    weights_file: str | None = None
    #: The network with its dropout active (Monte-Carlo dropout passes for uncertainty maps), for
    #: packages trained with dropout; absent in older packages and in those trained without it.
    mc_dropout_file: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    #: Bytes of each listed file, checked before its sha256 (absent in packages older than it).
    file_sizes: dict[str, int] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        texts = {"name": self.name, "onnx file": self.onnx_file, "activation": self.activation}
        if self.weights_file is not None:
            texts["weights file"] = self.weights_file
        if self.mc_dropout_file is not None:
            texts["dropout graph file"] = self.mc_dropout_file
        for what, value in texts.items():
            if not isinstance(value, str):
                raise PackageError(f"manifest {what} {value!r} must be a string; re-export the package")
        if not all(isinstance(n, str) for n in [*self.channels, *self.classes]):
            raise PackageError("manifest channel and class names must be strings; re-export the package")
        if len(self.channels) != self.config.in_channels:
            raise PackageError(f"manifest names {len(self.channels)} channels but the network takes "
                               f"{self.config.in_channels}")
        if len(self.classes) != self.config.out_channels:
            raise PackageError(f"manifest names {len(self.classes)} classes but the network gives "
                               f"{self.config.out_channels}")
        if self.activation not in ("softmax", "sigmoid"):
            raise PackageError(f"output activation {self.activation!r} unknown; use softmax or sigmoid")
        if self.spacing is not None:
            self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
            if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
                raise PackageError(f"manifest voxel size {self.spacing} must be three positive numbers z,y,x in µm")
        if not isinstance(self.files, dict) or not all(isinstance(v, str) for v in self.files.values()):
            raise PackageError("manifest 'files' must map file names to sha256 strings; re-export the package")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in self.file_sizes.values()):
            raise PackageError("manifest 'file_sizes' must map file names to byte counts; re-export the package")

    @property
    def tile(self) -> tuple[int, int, int]:
        return self.config.tile

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "architecture": self.architecture,
            "config": self.config.to_dict(),
            "input": {
                "channels": list(self.channels),
                "tile": list(self.config.tile),
                "spacing": list(self.spacing) if self.spacing else None,
                "normalization": self.normalization.to_dict(),
            },
            "output": {"classes": list(self.classes), "activation": self.activation},
            "onnx": {"file": self.onnx_file, "opset": self.onnx_opset, "input_name": "input",
                     "output_name": "logits"},
            "weights": self.weights_file,
            # Only when present, so older manifests read and write back unchanged.
            **({"mc_dropout": {"file": self.mc_dropout_file}} if self.mc_dropout_file else {}),
            "files": dict(self.files),
            # Only when recorded, so older manifests read and write back unchanged.
            **({"file_sizes": dict(self.file_sizes)} if self.file_sizes else {}),
            "provenance": self.provenance,
            "metrics": self.metrics,
            "parity": self.parity,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        try:
            if d.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
                raise PackageError(f"package format {d['format_version']} is newer than this tpem-seg reads "
                                   f"({FORMAT_VERSION}); upgrade tpem-seg")
            inp, out, onnx = d["input"], d["output"], d.get("onnx", {})
            return cls(
                name=d["name"],
                version=d.get("version", "0.1.0"),
                description=d.get("description", ""),
                architecture=d.get("architecture", "unetr"),
                config=UNETRConfig.from_dict(d["config"]),
                channels=list(inp["channels"]),
                spacing=tuple(inp["spacing"]) if inp.get("spacing") else None,
                normalization=NormalizationSpec(**inp.get("normalization", {})),
                classes=list(out["classes"]),
                activation=out.get("activation", "softmax"),
                onnx_file=onnx.get("file", "model.onnx"),
                onnx_opset=int(onnx.get("opset", 17)),
                weights_file=d.get("weights"),
                mc_dropout_file=d["mc_dropout"]["file"] if d.get("mc_dropout") else None,
                files=dict(d.get("files", {})),
                file_sizes=dict(d.get("file_sizes", {})),
                provenance=d.get("provenance", {}),
                metrics=d.get("metrics", {}),
                parity=d.get("parity", {}),
                format_version=int(d.get("format_version", FORMAT_VERSION)),
            )
        except PackageError:
            raise
        except TpemSegError as err:  # the registry's refusal of a config it does not know
            raise PackageError(f"manifest config is malformed ({err}); re-export the package") from err
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, ZeroDivisionError, IndexError) as err:
            # A damaged manifest surfaces as any of these from the typed fields' conversions.
            raise PackageError(f"manifest is malformed ({type(err).__name__}: {err}); re-export the package "
                               f"with `tpem-seg export`") from err
