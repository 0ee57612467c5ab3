"""Cross-validation of the bundled ``vessels-2p`` recipe on the six real vesselNN volumes.

``train``: the recipe of ``configs/zoo_vessels-2p_finetune.yaml`` (from scratch, ViT dropout), trained
on each fold's four training volumes (the study's folds, ``tpem_seg.train.study.design.FOLDS``) into
``OUT/fold{k}/best.pt``.

``score``: each fold's package on its two held-out volumes through ``tpem-seg run``'s own path (the
Segmenter, ONNX Runtime, the volume at its own voxel size): vessel Dice against the labels, beside a
global Otsu threshold and the best global threshold chosen on the volume's own labels
(:func:`tpem_seg.train.metrics.best_threshold_dice`, an upper bound for any global threshold), and the
AUROC with which the uncertainty map (``--uncertainty``, Monte-Carlo dropout) ranks the model's wrong
voxels above its right ones. Writes ``benchmarks/results/vessels2p_cv.{json,md}``.

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


def score(folds: list[int], out: Path, passes: int, data: str) -> None:
    """Export each fold's model and score it on its held-out volumes into ``out/fold{k}/scores.json``."""
    from tpem_seg.export import ExportOptions, export_package, source_from_checkpoint
    from tpem_seg.io import read_volume
    from tpem_seg.runtime import Segmenter
    from tpem_seg.train.metrics import best_threshold_dice, dice, error_auroc, otsu_labels

    specs = vesselnn_specs(data)
    for k in folds:
        folder = out / f"fold{k}"
        started = time.perf_counter()
        package, _ = export_package(source_from_checkpoint(folder / "best.pt"), ExportOptions(
            folder / f"vessels-2p-fold{k}.tpem", name=f"vessels-2p-fold{k}", channel_names=("vessel",),
            class_names=("background", "vessel"), overwrite=True))
        rows = []
        with Segmenter(package, backend="onnxruntime", device="cpu", overlap=0.0, resample=False,
                       mc_passes=passes, backend_options={"threads": 1}) as seg:
            for name in FOLDS[k]:
                spec = specs[name]
                volume = read_volume(spec.image, spacing=spec.spacing)
                image = volume.read_czyx()[0]
                truth = read_volume(spec.labels).read_czyx()[0] > 0
                t0 = time.perf_counter()
                labels, uncertainty = seg.segment(volume, uncertainty=True)
                seconds = time.perf_counter() - t0
                pred = labels == 1
                best, threshold = best_threshold_dice(image, truth)
                rows.append({"fold": k, "volume": name, "spacing_um": list(spec.spacing), "shape": list(image.shape),
                             "dice": dice(pred, truth), "otsu_dice": dice(otsu_labels(image) == 1, truth),
                             "best_threshold_dice": best, "best_threshold": threshold,
                             "error_rate": float((pred != truth).mean()),
                             "uncertainty_auroc": error_auroc(uncertainty, pred != truth),
                             "uncertainty_mean": float(uncertainty.mean()),
                             "uncertainty": seg.last_summary.extra["uncertainty"], "seconds": round(seconds, 1)})
                log.info("fold %d %s: Dice %.3f (Otsu %.3f, best threshold %.3f), uncertainty AUROC %.3f, %.0f s",
                         k, name, rows[-1]["dice"], rows[-1]["otsu_dice"], best, rows[-1]["uncertainty_auroc"],
                         seconds)
        (folder / "scores.json").write_text(json.dumps({"rows": rows, "minutes": round(
            (time.perf_counter() - started) / 60, 2)}, indent=1) + "\n")


def report(out: Path, command: str) -> None:
    """Merge the folds' scores into ``benchmarks/results/vessels2p_cv.{json,md}``."""
    rows, train_minutes, score_minutes = [], {}, {}
    for k in range(len(FOLDS)):
        scores = json.loads((out / f"fold{k}" / "scores.json").read_text())
        rows += scores["rows"]
        score_minutes[k] = scores["minutes"]
        train_minutes[k] = json.loads((out / f"fold{k}" / "train_time.json").read_text())["minutes"]
    recipe = load_config(FinetuneConfig, RECIPE)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU"
    result = {"command": command, "recipe": RECIPE, "steps": recipe.steps, "batch_size": recipe.batch_size,
              "dropout_rate": recipe.dropout_rate, "machine": machine, "train_minutes": train_minutes,
              "score_minutes": score_minutes, "rows": rows}
    Path(RESULTS + ".json").write_text(json.dumps(result, indent=1) + "\n")
    keys = ("dice", "otsu_dice", "best_threshold_dice", "uncertainty_auroc")
    lines = [f"# vessels-2p recipe, cross-validated (3 folds, seed {recipe.seed})", "",
             f"`{command}`", "",
             f"Recipe `{RECIPE}`: from scratch, {recipe.steps} steps x {recipe.batch_size} patches, ViT dropout "
             f"{recipe.dropout_rate}; each fold trained on 4 volumes, scored on its 2 held-out ones with the "
             f"exported package on ONNX Runtime (tiles without overlap, each volume at its own voxel size); "
             f"uncertainty: {rows[0]['uncertainty']['method']}, {rows[0]['uncertainty']['passes']} passes. "
             f"Machine: {machine}. Training minutes per fold: "
             + ", ".join(f"{k}: {v}" for k, v in train_minutes.items()) + "; scoring minutes per fold: "
             + ", ".join(f"{k}: {v}" for k, v in score_minutes.items()) + ".", "",
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
    p_score.add_argument("--data", default=DATA)
    p_report = sub.add_parser("report", help="write benchmarks/results/vessels2p_cv.{json,md}")
    p_report.add_argument("--out", default=OUT)
    p_report.add_argument("--made-by", required=True, help="the exact commands that made the scores")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "train":
        train([int(k) for k in args.folds.split(",")], Path(args.out))
    elif args.command == "score":
        score([int(k) for k in args.folds.split(",")], Path(args.out), args.mc_passes, args.data)
    else:
        report(Path(args.out), args.made_by)


if __name__ == "__main__":
    main()
