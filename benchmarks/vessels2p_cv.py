"""Cross-validation of the bundled ``vessels-2p`` recipe on the six real vesselNN volumes.

``train``: the recipe of ``configs/zoo_vessels-2p_finetune.yaml`` (from scratch, ViT dropout), trained
on each fold's four training volumes (the study's folds, ``tpem_seg.train.study.design.FOLDS``) into
``OUT/fold{k}/best.pt``.

``score``: each fold's network on its two held-out volumes through the runtime's own path (the
Segmenter with the torch backend on the fold's weights, unexported: ONNX export and its parity are
checked on the final model; each volume at its own voxel size): vessel Dice against the labels, beside
a global Otsu threshold and the best global threshold chosen on the volume's own labels
(:func:`tpem_seg.train.metrics.best_threshold_dice`, an upper bound for any global threshold), and the
AUROC with which the uncertainty map (Monte-Carlo dropout) ranks the model's wrong voxels above its
right ones, on a central y-x crop (``--crop``: the passes cost ``1 + passes`` network calls per tile).

``report``: merges the folds into ``benchmarks/results/vessels2p_cv.{json,md}``.

Run from the repository root, e.g.::

    nice -n 5 python benchmarks/vessels2p_cv.py train --folds 0,1,2
    nice -n 5 python benchmarks/vessels2p_cv.py score --folds 0,1,2
    python benchmarks/vessels2p_cv.py report --made-by "the two commands above"
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from tpem_seg.train.config import FinetuneConfig, load_config
from tpem_seg.train.study.design import FOLDS, vesselnn_specs

log = logging.getLogger("vessels2p_cv")

RECIPE = "configs/zoo_vessels-2p_finetune.yaml"
DATA = "../shared/data/vesselnn_2pm"
OUT = "runs/vessels-2p_cv2"
RESULTS = "benchmarks/results/vessels2p_cv"


def fold_config(k: int, out: Path, recipe: str = RECIPE) -> FinetuneConfig:
    """The recipe restricted to fold ``k``'s training volumes, writing to ``out/fold{k}``."""
    config = load_config(FinetuneConfig, recipe)
    held_out = set(FOLDS[k])
    train = [spec for spec in config.train if spec.name not in held_out]
    if len(train) != len(config.train) - len(held_out):
        raise SystemExit(f"fold {k}: the recipe does not list the held-out volumes {sorted(held_out)}")
    return replace(config, train=train, out=str(out / f"fold{k}"), resume=True)


def train(folds: list[int], out: Path) -> None:
    from tpem_seg.train.finetune import finetune

    for k in folds:
        config = fold_config(k, out)
        started = time.perf_counter()
        best = finetune(config)
        minutes = (time.perf_counter() - started) / 60
        (Path(config.out) / "train_time.json").write_text(json.dumps(
            {"fold": k, "minutes": round(minutes, 2), "steps": config.steps, "threads": config.threads,
             "train": [s.name for s in config.train], "test": FOLDS[k]}) + "\n")
        log.info("fold %d: trained in %.1f min -> %s", k, minutes, best)


def weights_package(checkpoint: Path, folder: Path):
    """The fold's network as an (unexported, in-memory) package holding only its PyTorch weights: the
    torch backend runs it; export (ONNX and parity) is left to the final model."""
    import torch

    from tpem_seg.export import ExportOptions, source_from_checkpoint
    from tpem_seg.export.exporter import manifest_for
    from tpem_seg.models.package import ModelPackage

    source = source_from_checkpoint(checkpoint)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(source.state_dict, folder / "model.pt")
    manifest = manifest_for(source, ExportOptions(folder / f"{checkpoint.parent.name}.tpem",
                                                  channel_names=("vessel",), class_names=("background", "vessel")))
    manifest.weights_file = "model.pt"
    return ModelPackage(folder, manifest)


def central_crop(array: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` y-x part of ``array (..., Y, X)`` (all of an axis shorter than that)."""
    y0, x0 = (max(0, (n - size) // 2) for n in array.shape[-2:])
    return array[..., y0:y0 + size, x0:x0 + size]


def score_volume(seg, image: np.ndarray, truth: np.ndarray, spacing, crop: int) -> dict:
    """Dice of ``seg`` on the whole ``image (Z, Y, X)`` against ``truth`` (bool), the two thresholding
    baselines, and the uncertainty AUROC for the wrong voxels of a central ``crop`` (y-x) run."""
    from tpem_seg.train.metrics import best_threshold_dice, dice, error_auroc, otsu_labels

    t0 = time.perf_counter()
    pred = seg.segment(image, spacing=spacing) == 1
    seconds = time.perf_counter() - t0
    best, threshold = best_threshold_dice(image, truth)
    t0 = time.perf_counter()
    labels, uncertainty = seg.segment(central_crop(image, crop), spacing=spacing, uncertainty=True)
    wrong = (labels == 1) != central_crop(truth, crop)
    return {"dice": dice(pred, truth), "otsu_dice": dice(otsu_labels(image) == 1, truth),
            "best_threshold_dice": best, "best_threshold": threshold, "error_rate": float((pred != truth).mean()),
            "crop_shape": list(labels.shape), "crop_error_rate": float(wrong.mean()),
            "uncertainty_auroc": error_auroc(uncertainty, wrong), "uncertainty_mean": float(uncertainty.mean()),
            "uncertainty": seg.last_summary.extra["uncertainty"], "seconds": round(seconds, 1),
            "uncertainty_seconds": round(time.perf_counter() - t0, 1)}


def score(folds: list[int], out: Path, passes: int, crop: int, data: str, only: list[str] | None = None) -> None:
    """Score each fold's model on its held-out volumes (those in ``only``, when given; one process per
    volume shares a loaded CPU better) into ``out/fold{k}/scores_{volume}.json``."""
    from tpem_seg.io import read_volume
    from tpem_seg.runtime import Segmenter

    specs = vesselnn_specs(data)
    for k in folds:
        folder = out / f"fold{k}"
        started = time.perf_counter()
        names = [n for n in FOLDS[k] if only is None or n in only]
        if not names:
            continue
        package = weights_package(folder / "best.pt", folder / f"weights_{names[0]}")
        with Segmenter(package, backend="torch", device="cpu", overlap=0.0, resample=False, mc_passes=passes,
                       backend_options={"threads": 1}) as seg:
            for name in names:
                spec = specs[name]
                image = read_volume(spec.image).read_czyx()[0]
                truth = read_volume(spec.labels).read_czyx()[0] > 0
                row = {"fold": k, "volume": name, "spacing_um": list(spec.spacing), "shape": list(image.shape),
                       **score_volume(seg, image, truth, spec.spacing, crop)}
                log.info("fold %d %s: Dice %.3f (Otsu %.3f, best threshold %.3f), uncertainty AUROC %.3f (%s)",
                         k, name, row["dice"], row["otsu_dice"], row["best_threshold_dice"],
                         row["uncertainty_auroc"], row["uncertainty"])
                (folder / f"scores_{name}.json").write_text(json.dumps({"row": row, "crop": crop, "minutes": round(
                    (time.perf_counter() - started) / 60, 2)}, indent=1) + "\n")


def report(out: Path, command: str) -> None:
    """Merge the folds' scores into ``benchmarks/results/vessels2p_cv.{json,md}``."""
    rows, train_minutes, score_minutes = [], {}, {}
    for k, names in enumerate(FOLDS):
        scores = [json.loads((out / f"fold{k}" / f"scores_{name}.json").read_text()) for name in names]
        rows += [s["row"] for s in scores]
        score_minutes[k] = round(sum(s["minutes"] for s in scores), 2)
        train_minutes[k] = json.loads((out / f"fold{k}" / "train_time.json").read_text())["minutes"]
    crop = scores[0]["crop"]
    recipe = load_config(FinetuneConfig, RECIPE)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU"
    result = {"command": command, "recipe": RECIPE, "steps": recipe.steps, "batch_size": recipe.batch_size,
              "dropout_rate": recipe.dropout_rate, "machine": machine, "train_minutes": train_minutes,
              "score_minutes": score_minutes, "rows": rows}
    Path(RESULTS + ".json").write_text(json.dumps(result, indent=1) + "\n")
    keys = ("dice", "otsu_dice", "best_threshold_dice", "uncertainty_auroc")
    spread = rows[0]["uncertainty"]
    lines = [f"# vessels-2p recipe, cross-validated (3 folds, seed {recipe.seed})", "",
             f"`{command}`", "",
             f"Recipe `{RECIPE}`: from scratch, {recipe.steps} steps x {recipe.batch_size} patches, ViT dropout "
             f"{recipe.dropout_rate}; each fold's model trained on 4 volumes and scored on its 2 held-out ones "
             f"through the runtime (`Segmenter`, torch backend fp32, tiles without overlap, each volume at its "
             f"own voxel size). Dice, Otsu and the best global threshold (chosen on the volume's own labels: "
             f"an upper bound for thresholding) on the whole volume; the uncertainty AUROC (uncertainty ranking "
             f"the model's wrong voxels above its right ones; 0.5 = chance) on the central {crop}x{crop} y-x "
             f"part, all planes, with {spread['method']} ({spread['passes']} passes). Machine: {machine}. "
             f"Training minutes per fold: " + ", ".join(f"{k}: {v}" for k, v in train_minutes.items())
             + "; scoring minutes per fold (its volumes in parallel processes, summed): " + ", ".join(f"{k}: {v}" for k, v in score_minutes.items()) + ".",
             "",
             "| fold | volume | Dice | Otsu | best global threshold (own labels) | error rate | uncertainty AUROC |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['fold']} | {r['volume']} | {r['dice']:.3f} | {r['otsu_dice']:.3f} | "
                     f"{r['best_threshold_dice']:.3f} | {r['error_rate']:.3f} | {r['uncertainty_auroc']:.3f} |")
    means = {key: float(np.mean([r[key] for r in rows])) for key in keys}
    lines.append(f"| | mean | {means['dice']:.3f} | {means['otsu_dice']:.3f} | {means['best_threshold_dice']:.3f} | "
                 f"| {means['uncertainty_auroc']:.3f} |")
    Path(RESULTS + ".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train the folds' models")
    p_train.add_argument("--folds", default="0,1,2", help="comma-separated fold indices")
    p_train.add_argument("--out", default=OUT)
    p_score = sub.add_parser("score", help="export and score the folds' models on their held-out volumes")
    p_score.add_argument("--folds", default="0,1,2")
    p_score.add_argument("--out", default=OUT)
    p_score.add_argument("--mc-passes", type=int, default=20)
    p_score.add_argument("--crop", type=int, default=256, help="y-x size of the central part the uncertainty "
                         "AUROC is measured on")
    p_score.add_argument("--data", default=DATA)
    p_score.add_argument("--volumes", default=None, help="comma-separated held-out volumes to score (default: all)")
    p_report = sub.add_parser("report", help="write benchmarks/results/vessels2p_cv.{json,md}")
    p_report.add_argument("--out", default=OUT)
    p_report.add_argument("--made-by", required=True, help="the exact commands that made the scores")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "train":
        train([int(k) for k in args.folds.split(",")], Path(args.out))
    elif args.command == "score":
        score([int(k) for k in args.folds.split(",")], Path(args.out), args.mc_passes, args.crop, args.data,
              args.volumes.split(",") if args.volumes else None)
    else:
        report(Path(args.out), args.made_by)


if __name__ == "__main__":
    main()
