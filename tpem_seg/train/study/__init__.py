"""The label-efficiency study: does MIM pretraining let 25% of the labels do the work of 100%?

    tpem-seg train study --preset cpu            # ~75-90 min on 2 idle CPU cores
    tpem-seg train study --preset gpu --device cuda
    tpem-seg train study --preset smoke          # a few minutes: checks that everything runs

Table 1, real in vivo vessels (``vesselnn_2pm``, 6 volumes): folds of 2 test volumes;
for each fold, MIM pretraining (random and intensity masking) on the fold's 4 training
volumes only, unlabelled; then fine-tuning from scratch or from either encoder with 25%
and 100% of the fold's annotation, several seeds; every model segments the fold's test
volumes by sliding window and is scored (Dice, clDice). Table 2, simulated two-channel
volumes: random vs channel-separated masking, 25% of the labels, Dice per class.

Every finished run is appended to ``OUT/results.jsonl`` and skipped when the study is
run again, so an interrupted study resumes; the report (markdown) is rewritten from
all results at the end.

Modules: :mod:`.design` (presets, the config, the volumes), :mod:`.results` (the run log),
:mod:`.run` (training and scoring every arm), :mod:`.stats` (paired tests, the conclusion),
:mod:`.report` (the markdown, every table and finding computed from the results).
"""

from tpem_seg.train.study.design import FOLDS, PRESETS, SimStudy, StudyConfig, study_config, vesselnn_specs
from tpem_seg.train.study.report import write_report
from tpem_seg.train.study.results import Results, unit_scores
from tpem_seg.train.study.run import otsu_scores, run_study
from tpem_seg.train.study.stats import paired_test

__all__ = ["FOLDS", "PRESETS", "Results", "SimStudy", "StudyConfig", "otsu_scores", "paired_test", "run_study",
           "study_config", "unit_scores", "vesselnn_specs", "write_report"]