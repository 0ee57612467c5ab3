"""The dock widget: segment image layers with a bundled model or a ``.tpem`` package.

The segmentation runs in a napari thread worker (progress in napari's activity dock, counted
in network tiles); Cancel stops it before the next batch of tiles. Results are a Labels layer
(and, on request, one probability image per class) with the image layer's scale and
translation, so they overlay the image in µm.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Iterator

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, PushButton, \
    Select
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info, show_warning

from tpem_seg.errors import InputError, TpemSegError
from tpem_seg.io._meta import class_rgb
from tpem_seg.models import open_package, zoo_packages
from tpem_seg.napari._inference import Cancelled, SegmentRequest, SegmentResult, network_calls, segment, \
    stack_channels

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "torch", "tensorrt")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "fp16", "bf16")


def layer_spacing(layer: Image) -> tuple[float, float, float] | None:
    """The z/y/x scale of an image layer as a voxel size in µm; None for napari's default of ones."""
    scale = tuple(float(s) for s in layer.scale[-3:])
    return None if all(s == 1.0 for s in scale) else scale  # type: ignore[return-value]


def labels_colormap(n_classes: int) -> DirectLabelColormap:
    """Background transparent, classes in the colours the OME-Zarr writer uses."""
    colors: dict[Any, Any] = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
    colors.update({i: (*(c / 255 for c in class_rgb(i)), 1.0) for i in range(1, n_classes)})
    return DirectLabelColormap(color_dict=colors)


def parse_channels(text: str) -> tuple[int, ...] | None:
    """``"1,0"`` -> ``(1, 0)``; empty -> None (all channels)."""
    if not text.strip():
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"channels {text!r} must be comma-separated channel indices, e.g. 0,1") from None


def _work(data: np.ndarray, spacing: tuple[float, float, float] | None, request: SegmentRequest,
          cancel: threading.Event) -> Iterator[int]:
    """Thread-worker generator: yields once per finished tile, returns the SegmentResult.

    The segmentation runs in a thread of its own so that this generator can yield progress while
    it runs. Setting ``cancel`` makes it raise :class:`Cancelled` before its next batch of tiles
    (the worker's own quit would only stop the yields, not the segmentation).
    """
    events: queue.Queue[int | None] = queue.Queue()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = segment(data, spacing, request, on_tiles=events.put, cancel=cancel)
        except BaseException as err:  # handed to the worker thread, which raises it
            outcome["error"] = err
        finally:
            events.put(None)

    thread = threading.Thread(target=run, name="tpem-seg segment", daemon=True)
    thread.start()
    try:
        while (n := events.get()) is not None:
            for _ in range(n):
                yield 1
    finally:  # also when the generator is closed early: stop and wait for the segmentation
        cancel.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


class SegmentWidget(Container):
    """Image layers -> tpem-seg -> a Labels layer (and optionally probabilities) at the image's scale."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._worker: Any = None
        self._cancel = threading.Event()
        self.images = Select(label="image layers", choices=self._image_choices,
                             tooltip="3D layers, or one (C, Z, Y, X) layer; stacked as channels in list order")
        self.model = ComboBox(label="model", choices=sorted(zoo_packages()), tooltip="a bundled model")
        self.folder = FileEdit(label=".tpem folder", mode="d", value="",
                               tooltip="a model package folder; used instead of the bundled model when set")
        self.backend = ComboBox(label="backend", choices=BACKENDS, value="auto")
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        self.precision = ComboBox(label="precision", choices=PRECISIONS, value="fp32")
        self.overlap = FloatSpinBox(label="overlap", value=0.25, min=0.0, max=0.9, step=0.05)
        self.tta = CheckBox(label="TTA", value=False, tooltip="average the 8 flips of every tile (8x slower)")
        self.channels = LineEdit(label="channels", value="", tooltip="e.g. 1,0 to swap two channels; empty: all")
        self.probabilities = CheckBox(label="probabilities", value=False, tooltip="also add class probabilities")
        self.images.max_height = 110  # a few rows; the list scrolls
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend([self.images, self.model, self.folder, self.backend, self.device, self.precision,
                     self.overlap, self.tta, self.channels, self.probabilities, self.run_button,
                     self.cancel_button, self.status])
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(lambda _: self.images.reset_choices())

    # -- settings ----------------------------------------------------------------------------------

    def _image_choices(self, _widget: Any) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def request(self) -> SegmentRequest:
        folder = str(self.folder.value) if self.folder.value and str(self.folder.value) not in ("", ".") else ""
        return SegmentRequest(model=folder or str(self.model.value), backend=str(self.backend.value),
                              device=str(self.device.value), precision=str(self.precision.value),
                              overlap=float(self.overlap.value), tta=bool(self.tta.value),
                              channels=parse_channels(self.channels.value),
                              probabilities=bool(self.probabilities.value))

    def _chosen_layers(self) -> list[Image]:
        chosen = list(self.images.value)
        if not chosen and isinstance(self._viewer.layers.selection.active, Image):
            chosen = [self._viewer.layers.selection.active]
        if not chosen:
            raise InputError("no image layer chosen; open a stack and pick it under 'image layers'")
        return chosen

    # -- running -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start segmenting the chosen layers in a thread worker."""
        try:
            layers = self._chosen_layers()
            request = self.request()
            data = stack_channels([layer.data for layer in layers])
            spacing = layer_spacing(layers[0])
            package = open_package(request.model)
            total = network_calls(package, data.shape[1:], spacing, request)
        except TpemSegError as err:
            show_error(str(err))
            return
        if spacing is None:
            show_warning(f"{layers[0].name} has no scale; assuming the model's voxel size "
                         f"{package.manifest.spacing} µm (set the layer scale in µm to resample)")
        self._cancel = threading.Event()
        # _ignore_errors: _failed reports them (one line for user errors) instead of a re-raise.
        worker = create_worker(_work, data, spacing, request, self._cancel,
                               _progress={"total": total, "desc": "tpem-seg"}, _ignore_errors=True)
        worker.returned.connect(lambda result: self._add_layers(layers[0], result))
        worker.errored.connect(self._failed)
        worker.finished.connect(self._finished)
        self._worker = worker
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"segmenting {layers[0].name} ({total} tiles)..."
        worker.start()

    def cancel(self) -> None:
        """Ask the running segmentation to stop before its next batch of tiles."""
        if self._worker is not None:
            self.status.value = "cancelling..."
            self._cancel.set()

    @property
    def worker(self) -> Any:
        """The running thread worker, or None."""
        return self._worker

    def _add_layers(self, image: Image, result: SegmentResult) -> None:
        scale, translate = tuple(image.scale[-3:]), tuple(image.translate[-3:])
        self._viewer.add_labels(result.labels, name=f"{image.name} labels", scale=scale, translate=translate,
                                colormap=labels_colormap(len(result.classes)),
                                metadata={"tpem_seg": {"classes": result.classes, "model": result.model}},
                                features={"index": list(range(len(result.classes))), "class": result.classes})
        if result.probabilities is not None:
            self._viewer.add_image(result.probabilities, channel_axis=0, scale=scale, translate=translate,
                                   name=[f"{image.name} p({c})" for c in result.classes], contrast_limits=(0, 1),
                                   colormap=["gray", *["red", "green", "blue", "yellow", "magenta", "cyan"][
                                       :len(result.classes) - 1]], blending="additive", visible=False)
        self.status.value = result.summary
        show_info(f"tpem-seg: {result.summary}")

    def _failed(self, err: BaseException) -> None:
        if isinstance(err, Cancelled):
            self.status.value = str(err)
        elif isinstance(err, TpemSegError):
            self.status.value = f"error: {err}"
            show_error(str(err))
        else:  # a bug: keep the traceback in the log
            logger.error("segmentation failed", exc_info=err)
            self.status.value = f"failed: {type(err).__name__}: {err}"
            show_error(f"tpem-seg failed: {type(err).__name__}: {err}")

    def _finished(self) -> None:
        self._worker = None
        self.run_button.enabled, self.cancel_button.enabled = True, False
