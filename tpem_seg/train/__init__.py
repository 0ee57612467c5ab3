"""Training: masking, MIM pretraining, fine-tuning, patch sampling, losses, metrics, simulator.

Kept free of imports on purpose: ``tpem_seg.train.simulate`` must import with numpy and
scipy only (a runtime-only install uses it for ``tpem-seg demo``), while other modules of
this package import torch.
"""
