"""Training: masking, MIM pretraining, fine-tuning, patch sampling, losses, metrics, the study.

Kept free of imports on purpose: importing ``tpem_seg.train`` must not load torch until a
module that needs it is used. The simulator lives in :mod:`tpem_seg.sim` (no training stack).
"""
