"""The label-efficiency study: does MIM pretraining let few labels do the work of all of them?

    tpem-seg train study --preset cpu --pilot     # the pilot that fixed the fine-tuning length
    tpem-seg train study --preset cpu             # ~60 min on 2 idle CPU cores
    tpem-seg train study --preset gpu             # one GPU, 3 seeds, 16x128x128 tiles
    tpem-seg train study --preset cpu --report-only   # the report from whatever finished
    tpem-seg train study --preset smoke           # a few minutes: checks that everything runs

Table 1, real in vivo vessels (``vesselnn_2pm``, 6 volumes): folds of 2 test volumes; per fold,
MIM pretraining (random and intensity masking) on unlabelled data that never includes a test
volume, then fine-tuning from scratch or from an encoder at label budgets down to 10% of the
regions and one labelled volume of four; every model segments the fold's test volumes by sliding
window. The paper's claim is tested as equivalence (TOST, margin fixed before the runs) with the
test volume as the unit. Diagnostics check what the pretraining learnt and what the ViT carries.
Table 2, simulated two-channel volumes: random vs channel-separated masking.

Every finished run is appended to ``OUT/results.jsonl`` at once and skipped when the study is run
again, so an interrupted study resumes; the report (markdown) is rewritten from all results.

Modules: :mod:`.design` (the typed design and presets), :mod:`.results` (the run log),
:mod:`.arms` (one pretraining or fine-tuning run), :mod:`.pilot`, :mod:`.diagnostics`,
:mod:`.run` (the order of everything), :mod:`.stats` (TOST, paired t, gap fraction, Holm),
:mod:`.findings` (the comparisons and the conclusion), :mod:`.tables` and :mod:`.report` (the markdown).
"""

from tpem_seg.train.study.design import FOLDS, PRESETS, Cell, LabelBudget, Primary, SimStudy, StudyConfig, \
    study_config, vesselnn_specs
from tpem_seg.train.study.pilot import run_pilot
from tpem_seg.train.study.report import write_report
from tpem_seg.train.study.results import Results, unit_scores
from tpem_seg.train.study.run import otsu_scores, run_study, study_specs
from tpem_seg.train.study.stats import gap_fraction, holm, paired_t, tost

__all__ = ["FOLDS", "PRESETS", "Cell", "LabelBudget", "Primary", "Results", "SimStudy", "StudyConfig",
           "gap_fraction", "holm", "otsu_scores", "paired_t", "run_pilot", "run_study", "study_config",
           "study_specs", "tost", "unit_scores", "vesselnn_specs", "write_report"]
