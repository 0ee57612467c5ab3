"""A bioimage.io 3D model with ONNX weights as a tpem-seg package, for the tiled runtime.

    from tpem_seg.export.bioimageio_import import import_bioimageio
    package = import_bioimageio("model.zip", Path("theirs.tpem"))

What maps (everything else is refused with one line naming what cannot be mapped):

- one input ``(batch?, channel?, z, y, x)`` and one output with the same z/y/x size;
  the tile is the size of the test input (each side a multiple of 16, as packages need);
- the input's z/y/x scale in a length unit becomes the package's voxel size;
- preprocessing: ``scale_range`` over the spatial axes (per channel) is ``percentile``
  normalisation, ``scale_linear`` with one gain and offset is ``range``; either may be
  followed by ``clip`` to [0, 1]; ``ensure_dtype`` float32 is implied;
- postprocessing: ``softmax`` over the channel axis or ``sigmoid``;
- weights: ``onnx`` (with a symbolic batch axis), copied as ``model.onnx``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from tpem_seg.export.errors import ExportError
from tpem_seg.io._meta import um_per_unit
from tpem_seg.models import Manifest, ModelPackage, NormalizationSpec, UNETRConfig, write_package

logger = logging.getLogger(__name__)

_SPACE = ("z", "y", "x")
_LOCAL = (".zip", ".yaml", ".yml")


def _refuse(what: str) -> ExportError:
    return ExportError(f"cannot import this bioimage.io model: {what}; tpem-seg imports 3D models with ONNX "
                       "weights, percentile or linear scaling (+ clip to [0, 1]) and softmax or sigmoid outputs")


def import_bioimageio(source: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False) -> ModelPackage:
    """Turn the bioimage.io model at ``source`` (zip, folder, ``rdf.yaml``, or an id/URL when online)
    into the package ``output`` (``NAME.tpem``).

    Raises:
        ExportError: the description does not load, or has something tpem-seg cannot map.
    """
    descr = _load(source)
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise _refuse(f"it has {len(descr.inputs)} inputs and {len(descr.outputs)} outputs (tpem-seg needs one each)")
    inp, out = descr.inputs[0], descr.outputs[0]
    channels = _channel_names(inp, "channel")
    classes = _channel_names(out, "class")
    tile = _tile(inp)
    _check_output_size(out, inp, tile)
    normalization = normalization_from_steps(inp.preprocessing)
    activation = activation_from_steps(out.postprocessing)
    onnx_bytes, opset = _onnx(descr)
    manifest = Manifest(
        name=Path(output).name.removesuffix(".tpem"), version=str(descr.version or "0.1.0"),
        description=f"imported from bioimage.io: {descr.name}. {descr.description}".strip(),
        architecture="bioimageio-onnx",
        config=UNETRConfig(in_channels=len(channels), out_channels=len(classes), tile=tile),
        channels=channels, classes=classes, spacing=_spacing(inp), normalization=normalization,
        activation=activation, onnx_opset=opset,
        provenance={"source": {"kind": "bioimage.io model", "file": str(source), "name": descr.name,
                               "id": str(descr.id) if descr.id else None,
                               "format_version": descr.format_version,
                               "license": str(descr.license) if descr.license else None,
                               "cite": [c.text for c in descr.cite]}},
    )
    package = write_package(output, manifest, {"model.onnx": onnx_bytes}, overwrite=overwrite)
    logger.info("imported %s as %s: %s, tile %s, %s", descr.name, package.path, normalization, tile, activation)
    return package


def _load(source: str | os.PathLike) -> Any:
    try:
        from bioimageio.spec import load_model_description
    except ImportError as err:
        raise ExportError("bioimage.io import needs bioimageio.spec; install it with "
                          "pip install 'tpem-seg[bioimageio]'") from err
    text = str(source)
    if "://" not in text and not Path(text).expanduser().exists() and ("/" in text or text.endswith(_LOCAL)):
        raise ExportError(f"{source} does not exist; pass a bioimage.io model zip, folder or rdf.yaml")
    if "://" not in text and Path(text).expanduser().exists():
        source = Path(text).expanduser().absolute()
    try:
        descr = load_model_description(source, format_version="latest")
    except (ValueError, OSError) as err:  # bioimageio.spec's way of saying "not found / not reachable"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"cannot load the bioimage.io model {source} ({first}); check the path, or the "
                          "network for an id or URL") from err
    summary = descr.validation_summary
    if summary.status == "failed" or not hasattr(descr, "inputs"):
        first = summary.errors[0].msg if summary.errors else "not a model description"
        raise ExportError(f"{source} is not a valid bioimage.io model ({first}); check the path or run "
                          "`bioimageio validate` on it")
    return descr


def _axis_types(tensor: Any) -> dict[str, Any]:
    axes = {str(a.id): a for a in tensor.axes}
    unknown = [f"{name} ({a.type})" for name, a in axes.items() if a.type not in ("batch", "channel", "space")]
    if unknown or any(name not in axes for name in _SPACE):
        raise _refuse(f"tensor {tensor.id} has axes {', '.join(axes)}; tpem-seg needs z, y, x "
                      "(and optionally batch, channel)")
    return axes


def _channel_names(tensor: Any, what: str) -> list[str]:
    axes = _axis_types(tensor)
    channel = next((a for a in axes.values() if a.type == "channel"), None)
    if channel is None:
        return [str(tensor.id)]
    return [str(name) for name in channel.channel_names] or [f"{what}{i}" for i in range(channel.size)]


def _tile(tensor: Any) -> tuple[int, int, int]:
    """Input z/y/x size: the test tensor's, which the description shows to work."""
    from bioimageio.spec.utils import load_array

    axes = list(_axis_types(tensor))
    shape = load_array(tensor.test_tensor).shape
    tile = tuple(int(shape[axes.index(name)]) for name in _SPACE)
    if any(t % 16 for t in tile):
        raise _refuse(f"its test input's z/y/x size {tile} is not a multiple of 16 on each side")
    return tile  # type: ignore[return-value]


def _check_output_size(out: Any, inp: Any, tile: tuple[int, int, int]) -> None:
    """The output's z/y/x are the input's (a reference to it without offset, or the tile's size)."""
    axes = _axis_types(out)
    for name, side in zip(_SPACE, tile):
        size = axes[name].size
        if isinstance(size, int):
            same = size == side
        else:
            same = str(getattr(size, "tensor_id", "")) == str(inp.id) and str(getattr(size, "axis_id", "")) == name \
                and not getattr(size, "offset", 0)
        if not same:
            raise _refuse(f"its output axis {name} is not the size of the input's")


def _spacing(tensor: Any) -> tuple[float, float, float] | None:
    axes = _axis_types(tensor)
    sizes = []
    for name in _SPACE:
        factor = um_per_unit(str(axes[name].unit)) if axes[name].unit else None
        if factor is None:
            return None
        sizes.append(float(axes[name].scale) * factor)
    return tuple(sizes)  # type: ignore[return-value]


def _kwargs(step: Any) -> dict[str, Any]:
    kwargs = getattr(step, "kwargs", None)
    return kwargs.model_dump() if kwargs is not None else {}


def normalization_from_steps(steps: Sequence[Any]) -> NormalizationSpec:
    """The :class:`NormalizationSpec` equal to bioimage.io preprocessing ``steps``."""
    scaling: NormalizationSpec | None = None
    clip = False
    for step in steps:
        kind, kwargs = str(step.id), _kwargs(step)
        if kind == "ensure_dtype" and kwargs.get("dtype") == "float32":
            continue
        if kind == "scale_range" and scaling is None and not clip:
            axes = {str(a) for a in kwargs.get("axes") or ()}
            if not axes >= set(_SPACE) or "channel" in axes or kwargs.get("reference_tensor"):
                raise _refuse(f"scale_range over axes {sorted(axes) or 'all'} (tpem-seg scales each channel "
                              "over z, y, x)")
            scaling = NormalizationSpec("percentile", (kwargs["min_percentile"], kwargs["max_percentile"]),
                                        clip=False)
        elif kind == "scale_linear" and scaling is None and not clip:
            gain, offset = _scalar(kwargs.get("gain", 1.0)), _scalar(kwargs.get("offset", 0.0))
            low = -offset / gain
            scaling = NormalizationSpec("range", range=(low, low + 1.0 / gain), clip=False)
        elif kind == "clip" and scaling is not None and not clip and \
                (kwargs.get("min"), kwargs.get("max")) == (0.0, 1.0):
            clip = True
        else:
            raise _refuse(f"preprocessing step {kind} {kwargs or ''}".rstrip())
    if scaling is None:
        return NormalizationSpec("none", clip=False)
    return NormalizationSpec(scaling.mode, scaling.percentiles, scaling.range, clip=clip)


def _scalar(value: Any) -> float:
    values = value if isinstance(value, (list, tuple)) else [value]
    if len(set(values)) != 1 or float(values[0]) == 0.0:
        raise _refuse(f"scale_linear with per-channel or zero factors {value}")
    return float(values[0])


def activation_from_steps(steps: Sequence[Any]) -> str:
    """``"softmax"`` or ``"sigmoid"`` from bioimage.io postprocessing ``steps``."""
    kinds = [str(s.id) for s in steps if not (str(s.id) == "ensure_dtype")]
    if kinds == ["softmax"] and str(_kwargs(steps[[str(s.id) for s in steps].index("softmax")]).get(
            "axis", "channel")) == "channel":
        return "softmax"
    if kinds == ["sigmoid"]:
        return "sigmoid"
    raise _refuse(f"postprocessing {kinds or 'none'} (tpem-seg applies softmax over the classes or sigmoid "
                  "to the network's logits)")


def _onnx(descr: Any) -> tuple[bytes, int]:
    import onnx

    entry = descr.weights.onnx
    if entry is None:
        formats = [name for name, value in descr.weights if value is not None]
        raise _refuse(f"it has no ONNX weights (only {', '.join(formats)})")
    data = entry.get_reader().read()
    graph = onnx.load_from_string(data)
    batch = graph.graph.input[0].type.tensor_type.shape.dim[0]
    if not batch.dim_param:
        raise _refuse(f"its ONNX input has a fixed batch of {batch.dim_value} (tpem-seg batches tiles)")
    opset = max((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return data, int(opset)
