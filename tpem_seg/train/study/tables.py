"""The report's tables, each computed from the results; a cell without finished runs shows ``–``
and every table says how many of its runs finished."""

from __future__ import annotations

import numpy as np

from tpem_seg.train.study.design import ARMS, StudyConfig, arm_name
from tpem_seg.train.study.findings import METRIC, cell_scores, gap_fractions, primary_comparison, \
    secondary_comparisons
from tpem_seg.train.study.results import Results, unit_scores
from tpem_seg.train.study.stats import mean_sd, number, volume_means


def test_volumes(cfg: StudyConfig) -> list[str]:
    return [n for fold in cfg.folds for n in fold]


def completeness(cfg: StudyConfig, results: Results) -> list[str]:
    """One line per cell that is not complete (volumes x seeds finished of those planned)."""
    planned = len(test_volumes(cfg)) * len(cfg.seeds)
    missing = []
    for c in cfg.cells:
        done = len(cell_scores(results, c.arm, c.labels))
        if done < planned:
            missing.append(f"{arm_name(c.arm)} {c.labels}: {done} of {planned} (test volume x seed) runs")
    if cfg.diagnostics.enabled:
        maskings = {c.arm for c in cfg.cells if c.arm != "scratch"}
        for table, planned_rows in (("mim-l1", len(cfg.folds) * len(maskings)), ("vit-zeroed", len(cfg.folds)),
                                    ("probe", 2 * len(cfg.diagnostics.probe_folds))):
            done = len(results.select(table=table))
            if done < planned_rows:
                missing.append(f"diagnostic {table}: {done} of {planned_rows} runs")
    return missing


def table1_lines(cfg: StudyConfig, results: Results, otsu: dict) -> list[str]:
    budgets = [b.name for b in cfg.budgets]
    volumes = test_volumes(cfg)
    lines = ["## Table 1: real vessels, Dice (vessel) on the test volumes", "",
             f"Mean ± sd over test volumes of the per-volume seed means; (n) = test volumes finished of "
             f"{len(volumes)}.", "",
             "| arm | " + " | ".join(f"{b} labels" for b in budgets) + " |", "|---" * (1 + len(budgets)) + "|"]
    planned = {(c.arm, c.labels) for c in cfg.cells}
    for arm in ARMS:
        if not any(a == arm for a, _ in planned):
            continue
        cells = []
        for b in budgets:
            means = volume_means(cell_scores(results, arm, b))
            cells.append(f"{mean_sd(list(means.values()))} ({len(means)})" if (arm, b) in planned else "not run")
        lines.append(f"| {arm_name(arm)} | " + " | ".join(cells) + " |")
    otsu_dice = [otsu[n][METRIC] for n in volumes if n in otsu]
    lines.append(f"| Otsu threshold (no training) | {mean_sd(otsu_dice)} |" + " |" * (len(budgets) - 1))
    lines += ["", "Per test volume (Dice, mean over seeds; clDice in the raw results):", "",
              "| volume | Otsu | " + " | ".join(f"{arm_name(c.arm)} {c.labels}" for c in cfg.cells) + " |",
              "|---" * (2 + len(cfg.cells)) + "|"]
    means = {(c.arm, c.labels): volume_means(cell_scores(results, c.arm, c.labels)) for c in cfg.cells}
    for name in volumes:
        row = [number(means[(c.arm, c.labels)].get(name, float("nan")), ".3f") for c in cfg.cells]
        lines.append(f"| {name} | {number(otsu.get(name, {}).get(METRIC, float('nan')), '.3f')} | "
                     + " | ".join(row) + " |")
    return lines


def equivalence_lines(cfg: StudyConfig, results: Results) -> list[str]:
    primary = primary_comparison(cfg, results)
    secondary = secondary_comparisons(cfg, results)
    lines = ["", "## Equivalence and differences", "",
             f"Unit: the test volume (seeds averaged per volume first; {len(cfg.seeds)} seed(s) per cell). "
             f"Margin ±{cfg.primary.margin:g} Dice, fixed in the preset before the runs. Equivalence: TOST "
             f"(two one-sided t-tests, level 0.05), equivalent when the 90% CI lies inside the margin. The "
             f"primary comparison is not corrected; the secondary ones (every other row) are Holm-corrected as "
             f"one family of {len(secondary)}, the planned one: a comparison that did not run counts as p = 1.", "",
             "| comparison | role | n | mean diff | CI | p | Holm p | result |", "|---|---|---|---|---|---|---|---|"]
    for role, c in [("primary", primary)] + [("secondary", s) for s in secondary]:
        t = c.test
        ci_name = "90%" if c.kind == "equivalence" else "95%"
        ci = f"{ci_name} [{number(t['ci_low'], '+.3f')}, {number(t['ci_high'], '+.3f')}]"
        if c.kind == "equivalence":
            result = "equivalent" if t["equivalent"] and (role == "primary" or c.p_holm < 0.05) else "not shown"
            p_name = f"TOST {number(t['p'], '.3g')}"
        else:
            result = ("higher" if c.p_holm < 0.05 and t["mean_diff"] > 0 else "lower" if c.p_holm < 0.05 else
                      "no difference shown") + f", dz {number(t['dz'], '+.2f')}"
            p_name = f"t {number(t['p'], '.3g')}"
        holm = "–" if role == "primary" else number(c.p_holm, ".3g")
        lines.append(f"| {c.name} | {role} | {t['n']} | {number(t['mean_diff'], '+.3f')} | {ci} | {p_name} | "
                     f"{holm} | {result} |")
    return lines


def gap_lines(cfg: StudyConfig, results: Results) -> list[str]:
    lines = ["", "### Fraction of the gap closed", "",
             f"(pretrained − scratch) / (scratch {cfg.primary.full} − scratch), at the same label budget, over "
             f"test volumes; 95% percentile bootstrap CI over volumes (10000 resamples). 100% closes the gap; a gap "
             f"near zero makes the fraction unstable (see the resamples without a positive gap).", "",
             "| cell | n | scratch gap to full labels | fraction closed | 95% CI | resamples without a gap |",
             "|---|---|---|---|---|---|"]
    for name, g in gap_fractions(cfg, results):
        lines.append(f"| {name} | {g['n']} | {number(g['gap'], '+.3f')} | {number(g['fraction'], '.0%')} | "
                     f"[{number(g['ci_low'], '.0%')}, {number(g['ci_high'], '.0%')}] | "
                     f"{number(g['undefined'], '.1%')} |")
    return lines


def pilot_lines(cfg: StudyConfig, results: Results) -> list[str]:
    rows = sorted(results.select(table="pilot"), key=lambda r: r["steps"])
    pre = results.select(table="pilot-pretrain")
    if not rows and not pre:
        return ["", "## Pilot", "", "No pilot recorded in these results (`tpem-seg train study --pilot`)."]
    lines = ["", "## Pilot: fine-tuning length and cost", "",
             f"Run before the study (`tpem-seg train study --preset {cfg.preset} --pilot`): scratch, "
             f"{cfg.pilot_labels} of the labels of fold 0's training volumes but one, whole schedules of each "
             f"length, scored on the held-out training volume (no test volume is looked at). CPU seconds "
             f"estimate an idle 1-thread run on a shared machine.", "",
             "| steps | held-out volume | Dice | train s/step (wall) | train CPU s/step | evaluation s (wall) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        held, steps = r["held_out"], r["steps"]
        cpu = r.get("train_cpu_seconds", float("nan")) / steps
        lines.append(f"| {steps} | {held} | {r['per_volume'][held][METRIC]:.3f} | {r['train_seconds'] / steps:.2f} | "
                     f"{cpu:.2f} | {r['eval_seconds']:.0f} |")
    for r in pre:
        cpu = r.get("cpu_seconds", float("nan")) / r["steps"]
        lines.append(f"\nPretraining pilot, {r['arm']} masking: {r['steps']} steps x {cfg.pretrain_batch} tiles, "
                     f"{r['seconds'] / r['steps']:.2f} s/step wall, {cpu:.2f} CPU s/step (including loading and "
                     f"simulating its volumes).")
    return lines


def diagnostics_lines(cfg: StudyConfig, results: Results) -> list[str]:
    lines = ["", "## Diagnostics", "", "### Masked reconstruction against a trivial predictor", "",
             f"Masked L1 (normalised intensity) on {cfg.diagnostics.l1_batches} x {cfg.pretrain_batch} un-augmented "
             f"tiles of each fold's test volumes, never seen in pretraining, masked as in pretraining. Trivial: each "
             f"tile's mean over its visible voxels. Ratio < 1: the model predicts better than the mean.", "",
             "| fold | masking | MIM model | trivial | ratio |", "|---|---|---|---|---|"]
    for r in sorted(results.select(table="mim-l1"), key=lambda r: (r["fold"], r["arm"])):
        lines.append(f"| {r['fold']} | {r['arm']} | {r['model']:.4f} | {r['trivial']:.4f} | {r['ratio']:.2f} |")
    d = cfg.diagnostics
    lines += ["", "### Frozen-encoder probe", "",
              f"Only the decoder trains ({d.probe_steps} steps, encoder learning rate 0, {d.probe_labels} of the "
              f"labels, seed {cfg.seeds[0]}), on the fold's {arm_name(cfg.primary.arm)} encoder or on a randomly "
              f"initialised one. Dice on the fold's test volumes.", "",
              "| fold | test volume | pretrained encoder | random encoder | difference |", "|---|---|---|---|---|"]
    for k in d.probe_folds:
        pre = unit_scores(results, "probe", cfg.primary.arm, d.probe_labels, METRIC)
        rnd = unit_scores(results, "probe", "scratch", d.probe_labels, METRIC)
        rows = [r for r in results.select(table="probe", fold=k)]
        for volume in sorted({v for r in rows for v in r["per_volume"]}):
            a, b = pre.get((volume, cfg.seeds[0]), float("nan")), rnd.get((volume, cfg.seeds[0]), float("nan"))
            lines.append(f"| {k} | {volume} | {number(a, '.3f')} | {number(b, '.3f')} | {number(a - b, '+.3f')} |")
    lines += ["", "### ViT zeroed", "",
              f"The trained scratch models at {d.skip_labels} of the labels (seed {cfg.seeds[0]}), scored as trained "
              f"and with every ViT output (final tokens and skip hidden states) set to zero.", "",
              "| test volume | trained | ViT zeroed | change |", "|---|---|---|---|"]
    trained = unit_scores(results, "vesselnn", "scratch", d.skip_labels, METRIC)
    zeroed = unit_scores(results, "vit-zeroed", "scratch", d.skip_labels, METRIC)
    for volume, seed in sorted(zeroed):
        a, b = trained.get((volume, seed), float("nan")), zeroed[(volume, seed)]
        lines.append(f"| {volume} | {number(a, '.3f')} | {b:.3f} | {number(b - a, '+.3f')} |")
    return lines


def vit_zeroed_change(cfg: StudyConfig, results: Results) -> float | None:
    """Mean Dice change when the ViT is zeroed, over the (volume, seed) models that have both scores:
    the zeroed models are those of one seed, so the trained scores of the others do not count (None:
    none)."""
    zeroed = unit_scores(results, "vit-zeroed", "scratch", cfg.diagnostics.skip_labels, METRIC)
    trained = unit_scores(results, "vesselnn", "scratch", cfg.diagnostics.skip_labels, METRIC)
    changes = [zeroed[key] - trained[key] for key in zeroed if key in trained]
    return float(np.mean(changes)) if changes else None


def pretrain_lines(results: Results) -> list[str]:
    rows = results.select(table="vesselnn-pretrain")
    if not rows:
        return []
    lines = ["", "### Pretraining runs", "", "| fold | masking | steps | masked L1 (last step) | minutes (wall) |",
             "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["fold"], r["arm"])):
        lines.append(f"| {r['fold']} | {r['arm']} | {r['steps']} | {r['masked_l1']:.4f} | {r['seconds'] / 60:.1f} |")
    return lines


def sim_table_lines(cfg: StudyConfig, results: Results) -> list[str]:
    sim = cfg.sim
    labels = f"{sim.fraction:.0%}"
    lines = ["", "## Table 2: simulated two-channel volumes, Dice per class", "",
             f"There is no labelled two-channel real set in the shared data (the two-channel cellfinder crop has cell "
             f"centres, not voxel labels), so channel-separated masking is tested on simulated volumes: "
             f"{sim.n_train} labelled training and {sim.n_test} test volumes from `tpem_seg.sim` "
             f"({'x'.join(map(str, sim.shape))} voxels at {'x'.join(f'{s:g}' for s in sim.spacing)} µm; channel 0 "
             f"vessel dye, channel 1 neurons), plus {sim.n_unlabelled} unlabelled ones for pretraining; `{sim.model}`. "
             f"Pretraining {sim.pretrain_steps} steps with input-space masks (mask unit "
             f"{'x'.join(map(str, cfg.mask_patch))}, ratio {cfg.mask_ratio}): `random` masks both channels at the "
             f"same places, `channel` draws an independent mask per channel. Fine-tuning {sim.finetune_steps} steps "
             f"with {labels} of the labels. Mean ± sd over test volumes x seeds; {sim.n_test} test volumes are too "
             f"few for a test, so no p-values.", "",
             "| arm | Dice vessel | Dice neuron | clDice vessel | runs |", "|---|---|---|---|---|"]
    for arm in sim.arms:
        cells = [mean_sd(list(unit_scores(results, "sim", arm, labels, m).values()))
                 for m in ("dice/vessel", "dice/neuron", "cldice/vessel")]
        runs = len(results.select(table="sim", arm=arm, labels=labels))
        lines.append(f"| {arm_name(arm)} | " + " | ".join(cells) + f" | {runs} of {len(cfg.seeds)} |")
    return lines
