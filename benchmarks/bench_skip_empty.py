"""Skipping empty tiles on the real vessel volumes (../shared/data/vesselnn_2pm): speed-up, agreement
with the full run, and how much labelled vessel lies where only skipped tiles reach.

    python benchmarks/bench_skip_empty.py [--model PATH] [--thresholds 0.05,0.1,0.2] [--repeats 3]

For each volume, the full run and one run per threshold are timed interleaved (ONNX Runtime on the
CPU, labels out, median of --repeats). Agreement with the full run: fraction of equal labels, Dice of
the vessel class, max abs difference of probabilities (one probabilities run each). The model-free
figure that says when skipping is safe: the share of ground-truth vessel voxels lying only under
skipped tiles ("GT vessel at risk"): those voxels get background whatever the network would say.

Model: a trained 1-channel package from tpem_seg/zoo if there is one, else unetr-t16 (16x64x64 tiles,
for thin anisotropic stacks) with random weights (seeded), which makes the agreement figures a
statement about tiles, not about a trained network: the report says which.

Writes benchmarks/results/skip_empty_vesselnn.json and .md (with this command).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "vesselnn_2pm"


def pick_package(model: str | None, cache: Path):
    """(package, description): the given one, a 1-channel zoo package, or unetr-t16 with random weights."""
    from tpem_seg.models import open_package, zoo_packages

    if model:
        return open_package(model), f"given package {model}"
    for name, path in zoo_packages().items():
        package = open_package(path)
        if package.manifest.config.in_channels == 1:
            return package, f"trained zoo package {name}"
    path = cache / "unetr-t16-1ch-random.tpem"
    if not (path / "manifest.json").is_file():
        import torch

        from tpem_seg.export.package import package_from_model
        from tpem_seg.models import Manifest, create_model, get_config

        torch.manual_seed(0)
        config = get_config("unetr-t16", in_channels=1, out_channels=2)
        manifest = Manifest(name="unetr-t16-1ch-random", config=config, channels=["vessel"],
                            classes=["background", "vessel"], description="unetr-t16, 1 channel, random weights")
        package_from_model(create_model(config), manifest, path, overwrite=True)
    return open_package(path), "unetr-t16 with RANDOM weights (no trained 1-channel package in tpem_seg/zoo)"


def coverage_of_run_tiles(volume, package, threshold: float, overlap: float = 0.25) -> np.ndarray:
    """Per voxel ``(Z, Y, X)``, how many non-skipped tiles cover it (0: only skipped tiles reach it)."""
    from tpem_seg.runtime.normalize import fit_normalizer
    from tpem_seg.runtime.pipeline import TileBatch, iter_tiles, make_plan

    manifest = package.manifest
    plan = make_plan(volume.shape_zyx, manifest.tile, overlap)
    normalizer = fit_normalizer(volume, manifest.normalization)
    cover = np.zeros(plan.padded, dtype=np.int16)
    d, h, w = plan.tile
    for item in iter_tiles(volume, plan, normalizer, None, len(plan.yx_origins), threshold):
        if isinstance(item, TileBatch):
            for (z, y, x), empty in zip(item.origins, item.empty):
                if not empty:
                    cover[z:z + d, y:y + h, x:x + w] += 1
    (pz, _), (py, _), (px, _) = plan.pads
    z, y, x = plan.shape
    return cover[pz:pz + z, py:py + y, px:px + x]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--thresholds", default="0.05,0.1,0.2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"{DATA} is absent: nothing to benchmark", file=sys.stderr)
        return 2

    from tpem_seg import Segmenter, read_volume
    from tpem_seg.runtime.bench import machine_info
    from tpem_seg.cli.bench import bench_cache_dir

    command = "python benchmarks/bench_skip_empty.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    package, model_note = pick_package(args.model, bench_cache_dir())
    thresholds = [float(t) for t in args.thresholds.split(",")]
    rows = []
    started = time.perf_counter()
    for entry in csv.DictReader(open(DATA / "volumes.csv", encoding="utf-8")):
        name = entry["name"]
        volume = read_volume(DATA / "images" / f"{name}.tif")
        volume = type(volume)(np.asarray(volume.data), volume.axes, volume.spacing, volume.channel_names)
        truth = np.asarray(read_volume(DATA / "labels" / f"{name}.tif").data) > 0
        segmenters = {None: Segmenter(package, backend="onnxruntime", device="cpu", resample=False)}
        for t in thresholds:
            segmenters[t] = Segmenter(package, backend="onnxruntime", device="cpu", resample=False, skip_empty=True,
                                      empty_threshold=t)
        times = {k: [] for k in segmenters}
        labels, summaries = {}, {}
        for key, seg in segmenters.items():  # warm-up
            seg.segment(volume)
        for _ in range(args.repeats):
            for key, seg in segmenters.items():
                t0 = time.perf_counter()
                labels[key] = seg.segment(volume)
                times[key].append(time.perf_counter() - t0)
                summaries[key] = seg.last_summary
        probs = {}
        for key in segmenters:
            with Segmenter(package, backend="onnxruntime", device="cpu", resample=False, output="probabilities",
                           skip_empty=key is not None, empty_threshold=key or 0.1) as seg:
                probs[key] = seg.segment(volume).astype(np.float32)
        full_t = float(np.median(times[None]))
        for t in thresholds:
            cover = coverage_of_run_tiles(volume, package, t)
            at_risk = truth & (cover == 0)
            rows.append({
                "volume": name, "shape": list(volume.shape_zyx), "threshold": t, "tiles": summaries[t].tiles,
                "skipped": summaries[t].extra["skipped_tiles"], "full_s": full_t, "skip_s": float(np.median(times[t])),
                "full_samples": times[None], "skip_samples": times[t],
                "speedup": full_t / float(np.median(times[t])),
                "voxel_agreement": float(np.mean(labels[t] == labels[None])),
                "vessel_dice_vs_full": dice(labels[t] == 1, labels[None] == 1),
                "max_abs_prob_diff": float(np.abs(probs[t] - probs[None]).max()),
                "gt_vessel_at_risk": float(at_risk.sum() / max(truth.sum(), 1)),
                "gt_dice_full": dice(labels[None] == 1, truth), "gt_dice_skip": dice(labels[t] == 1, truth),
            })
            r = rows[-1]
            print(f"{name} thr {t}: {r['skipped']}/{r['tiles']} skipped, {r['speedup']:.2f}x, agree "
                  f"{r['voxel_agreement']:.4f}, GT vessel at risk {r['gt_vessel_at_risk']:.2%}", file=sys.stderr)
        for seg in segmenters.values():
            seg.close()
    report = {"command": command, "model": model_note, "package": package.name, "tile": list(package.manifest.tile),
              "backend": "onnxruntime cpu fp32", "repeats": args.repeats, "seconds": time.perf_counter() - started,
              "machine": machine_info("cpu"), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "skip_empty_vesselnn.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "skip_empty_vesselnn.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Skipping empty tiles on the vesselNN two-photon volumes", "",
        f"Command: `{report['command']}`", "",
        f"- model: {report['model']} (package {report['package']}, tile {'x'.join(map(str, report['tile']))}), "
        f"{report['backend']}, labels out, median of {report['repeats']} interleaved runs",
        f"- machine: {m['cpu']}, {m['cores']} cores, load average "
        f"{', '.join(f'{v:.1f}' for v in m.get('load_average') or [])}, env "
        f"{', '.join(f'{k}={v}' for k, v in m.get('env', {}).items() if v) or 'no OMP_* set'}; versions "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        "- rule: a tile is empty when, in every channel, its 99th percentile of normalised intensity (the "
        "package's percentile normalisation, per volume) is below the threshold",
        "", "| volume | threshold | tiles skipped | full s | skip s | speed-up | labels equal to full run "
        "| vessel Dice vs full | max abs Δp | GT vessel at risk | GT Dice full → skip |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['volume']} | {r['threshold']} | {r['skipped']}/{r['tiles']} | {r['full_s']:.2f} "
                     f"| {r['skip_s']:.2f} | {r['speedup']:.2f}× | {r['voxel_agreement']:.2%} "
                     f"| {r['vessel_dice_vs_full']:.4f} | {r['max_abs_prob_diff']:.3f} | {r['gt_vessel_at_risk']:.2%} "
                     f"| {r['gt_dice_full']:.3f} → {r['gt_dice_skip']:.3f} |")
    lines += ["", "GT vessel at risk: share of the labelled vessel voxels that only skipped tiles cover; they "
              "are labelled background whatever a trained network would say, so this bounds the recall lost "
              "by skipping, independently of the model."]
    if "RANDOM" in report["model"]:
        lines.append("With random weights, Dice against the labels means nothing; agreement with the full run "
                     "shows how much skipping changes the output, not what a trained network loses.")
    else:
        lines.append("GT Dice: against the vesselNN labels (a package fine-tuned on vesselNN has seen these stacks: "
                     "in-sample, optimistic in absolute terms; the change from full to skip is the point).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
