"""A model package as a bioimage.io model (spec 0.5), for deepImageJ, ilastik and bioimageio.core.

    from tpem_seg.export.bioimageio import BioimageioExportOptions, export_bioimageio
    export_bioimageio("vessels-2p", BioimageioExportOptions(Path("vessels-2p.zip"), sample=Path("stack.tif")))

What maps onto what:

- input ``(batch, channel, z, y, x)``, float32, the package's channel names, z/y/x in
  micrometres with the package's voxel size as scale, fixed at the package's tile;
- preprocessing: ``percentile`` normalisation is ``scale_range`` over z, y, x per
  channel (the percentiles of the tile, where tpem-seg takes them over the whole
  volume) followed by ``clip`` to [0, 1]; ``range`` is ``scale_linear`` (+ ``clip``);
- output ``(batch, channel, z, y, x)``: the class probabilities, ``softmax`` or
  ``sigmoid`` over the classes as postprocessing, with a halo of 1/8 of the tile per
  side that a tiling consumer should crop;
- weights: ``model.onnx`` (opset <= 18, the highest deepImageJ's runtime reads) and,
  where the package has ``model.pt``, the MONAI ``UNETR`` state dict;
- test tensors: one tile of a real volume and the probabilities tpem-seg's own
  runtime (ONNX Runtime) computes for it, normalising over that tile.

Needs the ``bioimageio`` extra (``bioimageio.spec``) to validate and zip the model.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tpem_seg.export.errors import ExportError
from tpem_seg.io import Volume, read_volume, write_volume
from tpem_seg.io._meta import class_rgb
from tpem_seg.io.png import write_png
from tpem_seg.models import ModelPackage, open_package
from tpem_seg.models.manifest import Manifest, NormalizationSpec
from tpem_seg.models.package import sha256_file
from tpem_seg.models.config import unetr_kwargs

logger = logging.getLogger(__name__)

#: deepImageJ's ONNX runtime reads opsets up to this one.
MAX_OPSET = 18

#: The paper the method comes from, and the network's.
CITATIONS = (
    {"text": "Xu et al. (2023), Masked Image Modeling for Label-Efficient Segmentation in Two-Photon "
             "Excitation Microscopy, MILLanD @ MICCAI 2023", "doi": "10.1007/978-3-031-44917-8_11"},
    {"text": "Hatamizadeh et al. (2022), UNETR: Transformers for 3D Medical Image Segmentation, WACV 2022",
     "doi": "10.1109/WACV51458.2022.00181"},
)


@dataclass(frozen=True)
class BioimageioExportOptions:
    """Where and how to write the bioimage.io model.

    Attributes:
        output: the ``.zip`` to write (replaced if present).
        sample: a real volume (any format :func:`~tpem_seg.io.read_volume` reads) whose
            central tile becomes the test input; None uses a simulated volume.
        card: the model card (Markdown) that becomes the documentation; None writes
            one from the manifest.
        authors: author names.
        license: SPDX identifier of the weights' license.
        axes: the sample's axes when its file does not say (e.g. ``"CZYX"``).
    """

    output: Path
    sample: Path | None = None
    card: Path | None = None
    authors: Sequence[str] = ("tpem-seg developers",)
    license: str = "BSD-3-Clause"
    axes: str | None = None
    tags: Sequence[str] = field(default=("3d", "two-photon", "fluorescence", "segmentation", "unetr", "onnx"))


def export_bioimageio(model: str | Path | ModelPackage, options: BioimageioExportOptions) -> Path:
    """Write ``model`` (a bundled name, a ``.tpem`` folder or an opened package) as a bioimage.io zip.

    Returns:
        The written zip. It passes ``bioimageio test`` when its test tensors do.

    Raises:
        ExportError: opset above 18, a normalisation bioimage.io cannot express, a sample
            with the wrong channels or smaller than a tile, bioimageio.spec missing or
            rejecting the description.
    """
    package = model if isinstance(model, ModelPackage) else open_package(model)
    manifest = package.manifest
    if manifest.onnx_opset > MAX_OPSET:
        raise ExportError(f"{package.name} has ONNX opset {manifest.onnx_opset}; bioimage.io consumers read up to "
                          f"{MAX_OPSET}: re-export it with `tpem-seg export --opset {MAX_OPSET}`")
    preprocessing = preprocessing_steps(manifest.normalization)
    with tempfile.TemporaryDirectory(prefix="tpem-bioimageio-") as tmp:
        folder = Path(tmp)
        tile, spacing_note = _test_tile(manifest, options)
        probabilities = _reference_probabilities(package, tile)
        np.save(folder / "test_input.npy", tile[np.newaxis].astype(np.float32))
        np.save(folder / "test_output.npy", probabilities[np.newaxis].astype(np.float32))
        spacing = manifest.spacing
        write_volume(folder / "sample_input.tif", tile, "CZYX", spacing=spacing, channel_names=manifest.channels)
        write_volume(folder / "sample_output.tif", probabilities, "CZYX", spacing=spacing,
                     channel_names=manifest.classes)
        _cover(folder / "cover.png", tile, probabilities, manifest.activation)
        (folder / "README.md").write_text(_documentation(manifest, options.card, spacing_note), encoding="utf-8")
        (folder / "model.onnx").symlink_to(package.onnx_path.resolve())
        if package.weights_path is not None:
            (folder / "model.pt").symlink_to(package.weights_path.resolve())
        rdf = model_rdf(manifest, preprocessing, options, has_state_dict=package.weights_path is not None,
                        manifest_sha256=sha256_file(package.path / "manifest.json"))
        (folder / "rdf.yaml").write_text(json.dumps(rdf, indent=1), encoding="utf-8")  # JSON is YAML
        return _save_zip(folder / "rdf.yaml", options.output)


# -- the description ---------------------------------------------------------------------------------


def preprocessing_steps(spec: NormalizationSpec) -> list[dict[str, Any]]:
    """The bioimage.io preprocessing equal to ``spec`` (after a cast to float32)."""
    steps: list[dict[str, Any]] = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
    if spec.mode == "percentile":
        low, high = spec.percentiles
        if high <= 1.0:
            raise ExportError(f"upper percentile {high} is below 1, which bioimage.io's scale_range refuses; "
                              "re-export the package with a higher upper percentile")
        steps.append({"id": "scale_range", "kwargs": {"axes": ["z", "y", "x"], "min_percentile": low,
                                                       "max_percentile": high}})
    elif spec.mode == "range":
        low, high = spec.range
        steps.append({"id": "scale_linear", "kwargs": {"gain": 1.0 / (high - low), "offset": -low / (high - low)}})
    if spec.mode != "none" and spec.clip:
        steps.append({"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}})
    return steps


def _space_axes(manifest: Manifest, output: bool) -> list[dict[str, Any]]:
    axes = []
    for name, size, scale in zip("zyx", manifest.tile, manifest.spacing or (1.0, 1.0, 1.0)):
        axis: dict[str, Any] = {"type": "space", "id": name, "scale": float(scale)}
        if manifest.spacing is not None:
            axis["unit"] = "micrometer"
        if output:
            axis.update(size={"tensor_id": "input", "axis_id": name}, halo=max(1, size // 8))
        else:
            axis["size"] = size
        axes.append(axis)
    return axes


def model_rdf(manifest: Manifest, preprocessing: list[dict[str, Any]], options: BioimageioExportOptions,
              has_state_dict: bool, manifest_sha256: str) -> dict[str, Any]:
    """The ``rdf.yaml`` content (bioimage.io model spec 0.5) for ``manifest``; files named relative."""
    activation = {"id": "softmax", "kwargs": {"axis": "channel"}} if manifest.activation == "softmax" \
        else {"id": "sigmoid"}
    weights: dict[str, Any] = {"onnx": {"source": "model.onnx", "opset_version": manifest.onnx_opset}}
    if has_state_dict:
        weights["onnx"]["parent"] = "pytorch_state_dict"  # the ONNX graph was exported from these weights
        exporter = manifest.provenance.get("exporter", {})
        weights["pytorch_state_dict"] = {
            "source": "model.pt",
            "architecture": {"callable": "UNETR", "import_from": "monai.networks.nets",
                             "kwargs": unetr_kwargs(manifest.config)},
            "pytorch_version": str(exporter.get("torch", "2.2")).split("+")[0],
        }
    return {
        "format_version": "0.5.4",
        "type": "model",
        "name": manifest.name,
        "version": manifest.version,
        "description": manifest.description or f"tpem-seg model {manifest.name}",
        "authors": [{"name": name} for name in options.authors],
        "cite": list(CITATIONS),
        "license": options.license,
        "tags": list(options.tags),
        "documentation": "README.md",
        "covers": ["cover.png"],
        "inputs": [{
            "id": "input",
            "description": "raw intensities, channels " + ", ".join(manifest.channels),
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": list(manifest.channels)},
                     *_space_axes(manifest, output=False)],
            "test_tensor": {"source": "test_input.npy"},
            "sample_tensor": {"source": "sample_input.tif"},
            "data": {"type": "float32"},
            "preprocessing": preprocessing,
        }],
        "outputs": [{
            "id": "probabilities",
            "description": f"{manifest.activation} class probabilities: " + ", ".join(manifest.classes),
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": list(manifest.classes)},
                     *_space_axes(manifest, output=True)],
            "test_tensor": {"source": "test_output.npy"},
            "sample_tensor": {"source": "sample_output.tif"},
            "data": {"type": "float32"},
            "postprocessing": [activation],
        }],
        "weights": weights,
        "config": {"tpem_seg": {"manifest_sha256": manifest_sha256,
                                "spacing_um_zyx": list(manifest.spacing) if manifest.spacing else None,
                                "tile": list(manifest.tile)}},
    }


def _save_zip(rdf_path: Path, output: Path) -> Path:
    """Validate the description (no network) and zip it with its files, atomically."""
    try:
        from bioimageio.spec import ValidationContext, load_description, save_bioimageio_package
    except ImportError as err:
        raise ExportError("bioimage.io export needs bioimageio.spec; install it with "
                          "pip install 'tpem-seg[bioimageio]'") from err
    with ValidationContext(perform_io_checks=True, raise_errors=False):
        descr = load_description(rdf_path, format_version="latest")
    if descr.validation_summary.status == "failed":
        errors = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in descr.validation_summary.errors)
        raise ExportError(f"bioimage.io rejects the description of {rdf_path.parent.name} ({errors}); "
                          "report this with the package's manifest")
    output = Path(output).expanduser()
    if not output.parent.is_dir():
        raise ExportError(f"output folder {output.parent} does not exist; create it first")
    partial = output.with_name(f".{output.name}.partial")
    try:
        save_bioimageio_package(descr, output_path=partial)
        partial.replace(output)  # only a complete zip gets the name
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    logger.info("wrote bioimage.io model %s", output)
    return output


# -- test tensors, cover, documentation ---------------------------------------------------------------


def _test_tile(manifest: Manifest, options: BioimageioExportOptions) -> tuple[np.ndarray, str]:
    """The central tile ``(C, D, H, W)`` of the sample, raw intensities as float32, and where it came from."""
    if options.sample is None:
        volume, origin = _simulated_sample(manifest)
    else:
        volume = read_volume(options.sample, axes=options.axes)
        origin = f"the central tile of `{Path(options.sample).name}`"
    if volume.n_channels != manifest.config.in_channels:
        raise ExportError(f"the sample has {volume.n_channels} channel(s) but {manifest.name} takes "
                          f"{manifest.config.in_channels}; pass a sample with its channels "
                          f"({', '.join(manifest.channels)})")
    shape, tile = volume.shape_zyx, manifest.tile
    if any(s < t for s, t in zip(shape, tile)):
        raise ExportError(f"the sample {shape} is smaller than the tile {tile} of {manifest.name}; "
                          "pass a larger volume")
    z0, y0, x0 = ((s - t) // 2 for s, t in zip(shape, tile))
    data = volume.read_czyx(z0, z0 + tile[0])[:, :, y0:y0 + tile[1], x0:x0 + tile[2]]
    return np.ascontiguousarray(data, dtype=np.float32), origin


def _simulated_sample(manifest: Manifest) -> tuple[Volume, str]:
    # The simulator is moving to tpem_seg.sim (a lower layer); until then it lives in train.
    from tpem_seg.sim import simulate_volume

    logger.warning("no --sample given: the test tensors come from a simulated volume; pass a real stack")
    spacing = manifest.spacing or (5.0, 1.0, 1.0)
    shape = tuple(2 * t for t in manifest.tile)
    sim = simulate_volume(shape, spacing=spacing, seed=0)
    image = sim.image[: manifest.config.in_channels]
    return Volume(image, "CZYX", spacing=spacing), "the central tile of a volume from tpem-seg's simulator"


def _reference_probabilities(package: ModelPackage, tile: np.ndarray) -> np.ndarray:
    """What tpem-seg's runtime gives for ``tile`` as a whole volume: probabilities ``(K, D, H, W)`` float32."""
    from tpem_seg.runtime import Segmenter
    from tpem_seg.runtime.outputs import to_probabilities

    volume = Volume(tile, "CZYX")  # no voxel size: no resampling, the tile is the network input as is
    with Segmenter(package, backend="onnxruntime", device="cpu", output="logits") as segmenter:
        logits = segmenter.segment(volume)
    return to_probabilities(logits.astype(np.float32), package.manifest.activation).astype(np.float32)


def _cover(path: Path, tile: np.ndarray, probabilities: np.ndarray, activation: str) -> None:
    """A 2:1 cover: the central plane of the first channel, and the same plane with the labels in colour."""
    from tpem_seg.runtime.outputs import to_labels

    z = tile.shape[1] // 2
    plane = tile[0, z]
    low, high = np.percentile(plane, (1, 99.8))
    grey = np.clip((plane - low) / max(high - low, 1e-6), 0, 1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    labels = to_labels(probabilities[:, z], activation)
    overlay = rgb.copy()
    for value in np.unique(labels):
        if value:
            mask = labels == value
            overlay[mask] = (0.4 * rgb[mask] + 0.6 * np.array(class_rgb(int(value)))).astype(np.uint8)
    cover = np.concatenate([rgb, overlay], axis=1)
    height, width = cover.shape[:2]
    if width != 2 * height:  # tiles need not be square: pad to the 2:1 bioimage.io asks for
        side = max(height, width // 2)
        padded = np.zeros((side, 2 * side, 3), np.uint8)
        padded[:height, :width] = cover[: side, : 2 * side]
        cover = padded
    factor = max(1, 256 // cover.shape[0])
    write_png(path, cover.repeat(factor, axis=0).repeat(factor, axis=1))


def _documentation(manifest: Manifest, card: Path | None, origin: str) -> str:
    """The model card (or a summary of the manifest) plus a Validation section."""
    if card is not None:
        text = Path(card).read_text(encoding="utf-8").rstrip() + "\n"
    else:
        text = (f"# {manifest.name} {manifest.version}\n\n{manifest.description}\n\n"
                f"- input channels: {', '.join(manifest.channels)}\n- classes: {', '.join(manifest.classes)}\n"
                f"- tile: {'x'.join(map(str, manifest.tile))} voxels; voxel size (z, y, x): "
                f"{manifest.spacing or 'not recorded'} µm\n")
    parity = manifest.parity.get("onnxruntime_vs_torch", {})
    lines = [
        "", "## Validation", "",
        f"The test tensors are {origin}: the raw tile, and the class probabilities that tpem-seg's own "
        "runtime (ONNX Runtime, normalising over that tile) computes for it. `bioimageio test` reruns the "
        "preprocessing, the network and the postprocessing of this description and compares.",
        "",
        "tpem-seg normalises with percentiles over the whole volume (a strided sample of planes); the "
        "`scale_range` here takes them per tile, so a consumer that runs tile by tile sees slightly "
        "different intensities at each tile. Run large volumes with `tpem-seg run` for seamless results.",
    ]
    if parity:
        lines += ["", f"ONNX Runtime vs PyTorch when the package was made: max |Δp| "
                      f"{parity.get('max_abs_prob_diff', float('nan')):.2e} over {parity.get('n_tiles')} tiles, "
                      f"label agreement {parity.get('label_agreement')}."]
    return text + "\n".join(lines) + "\n"
