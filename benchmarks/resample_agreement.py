"""Streaming (block by block) resampling against the whole-volume path it replaced, on a real stack.

The whole-volume path, rebuilt here with scipy as it was: ``ndimage.zoom(order=1, grid_mode=False)``
of the whole volume to the model's voxel size, one pass of the tiles (``block="off"``), the logits
zoomed back whole, softmax. The streaming path: ``Segmenter(block=...)`` on the stack at its own
voxel size. Reports the largest probability difference (float32, from logits) and the labels that
differ, with how many of those are near-ties.

    python benchmarks/resample_agreement.py --data /work/shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: poon2015_plaqueVessels is at 2.485 µm in-plane: resampled 2.5x up to vessels-2p's 0.994 µm. A crop
#: keeps a 2-core run short; it has ragged edges against the tile.
STACK = "poon2015_plaqueVessels"
CROP = (slice(0, 14), slice(100, 260), slice(150, 330))
#: Its voxel size (µm, z/y/x) from volumes.csv: the TIFF does not carry it.
SPACING = (5.0, 2.485, 2.485)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--block", default="8,96,96", help="block core Z,Y,X of the streaming run")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()
    from scipy import ndimage

    from tpem_seg import Segmenter, read_volume
    from tpem_seg.runtime.resample import resampled_shape

    source = read_volume(args.data / "vesselnn_2pm" / "images" / f"{STACK}.tif")
    volume = np.asarray(source.data[CROP])
    model = (5.0, 0.994, 0.994)
    target = resampled_shape(volume.shape, SPACING, model)
    up = ndimage.zoom(volume.astype(np.float32), [n / o for n, o in zip(target, volume.shape)], order=1,
                      mode="nearest", grid_mode=False)
    common = dict(backend="onnxruntime", device="cpu", output="logits")
    with Segmenter("vessels-2p", block="off", **common) as seg:
        logits = seg.segment(up, spacing=model)
    whole = softmax(np.stack([ndimage.zoom(k, [n / o for n, o in zip(volume.shape, k.shape)], order=1,
                                           mode="nearest", grid_mode=False) for k in logits]))
    with Segmenter("vessels-2p", block=args.block, **common) as seg:
        streamed = softmax(seg.segment(volume, spacing=SPACING))
        summary = seg.last_summary
    differ = whole.argmax(0) != streamed.argmax(0)
    margin = np.abs(whole[1] - whole[0])
    result = {"stack": STACK, "crop": [[s.start, s.stop] for s in CROP], "spacing": list(SPACING),
              "resampled_to": list(target), "block": args.block, "blocks": summary.extra["blocks"],
              "max_probability_difference": float(np.abs(whole - streamed).max()),
              "labels_differing": int(differ.sum()), "voxels": int(differ.size),
              "largest_margin_where_labels_differ": float(margin[differ].max()) if differ.any() else None,
              "command": f"python benchmarks/resample_agreement.py --data {args.data} --block {args.block}"}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "resample_agreement.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
