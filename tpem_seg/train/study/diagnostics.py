"""Diagnostics: what the pretraining learnt, and how much of the segmentation the ViT carries.

- **Masked L1 against a trivial predictor**: each fold's MIM model reconstructs masked tiles of
  that fold's *test* volumes (never seen in pretraining), against predicting, for each tile and
  channel, the mean of its visible voxels. A model no better than that learnt nothing to transfer.
- **Frozen-encoder probe**: the UNETR's decoder alone is trained (encoder learning rate 0) on top of
  a pretrained and on top of a randomly initialised encoder, same steps, labels and seed.
- **ViT zeroed**: trained scratch models re-scored with every output of their ViT (the final
  tokens and the three skip hidden states) replaced by zeros, so the decoder has only its
  convolutional path from the raw input. The drop is what the ViT contributes at all.

Rows go into the study's results (tables ``mim-l1``, ``probe``, ``vit-zeroed``).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from tpem_seg.train.config import PretrainConfig, VolumeSpec, from_dict
from tpem_seg.train.study.arms import finetune_and_score, finetune_config, finetune_dir, fold_split
from tpem_seg.train.study.design import Cell, StudyConfig
from tpem_seg.train.study.results import Results

log = logging.getLogger(__name__)


def run_diagnostics(cfg: StudyConfig, results: Results, specs: dict[str, VolumeSpec],
                    encoder: Callable[[int, str], str], folds: Sequence[int],
                    maskings: Sequence[str] | None = None) -> None:
    """Every diagnostic of ``folds`` not yet in the results; ``encoder(fold, masking)`` gives a pretrain
    checkpoint; ``maskings``: the strategies whose masked L1 is measured (default: all in the cells).
    The probe runs on those of ``cfg.diagnostics.probe_folds`` among ``folds``. Cheapest first."""
    if maskings is None:
        maskings = sorted({c.arm for c in cfg.cells if c.arm != "scratch"})
    for k in folds:
        _, test = fold_split(cfg, specs, k)
        for masking in maskings:
            key = dict(table="mim-l1", fold=k, arm=masking)
            if not results.has(**key):
                results.add({**key, **reconstruction_vs_trivial(encoder(k, masking), test, cfg.diagnostics.l1_batches,
                                                                cfg.device, seed=k)})
    for k in folds:
        key = dict(table="vit-zeroed", fold=k, arm="scratch", labels=cfg.diagnostics.skip_labels, seed=cfg.seeds[0])
        best = finetune_dir(cfg, k, Cell("scratch", cfg.diagnostics.skip_labels), cfg.seeds[0]) / "best.pt"
        if results.has(**key):
            continue
        if not best.is_file():
            log.warning("no kept scratch model at %s: the ViT-zeroed diagnostic skips fold %d", best, k)
            continue
        results.add({**key, "per_volume": score_with_vit_zeroed(cfg, best, fold_split(cfg, specs, k)[1])})
    run_probe(cfg, results, specs, encoder, folds)


@contextmanager
def vit_zeroed(model) -> Iterator[None]:
    """Within the block, the UNETR ``model``'s ViT returns zeros (final tokens and hidden states)."""
    import torch

    def zero(module, inputs, output):
        tokens, hidden = output
        return torch.zeros_like(tokens), [torch.zeros_like(h) for h in hidden]

    handle = model.vit.register_forward_hook(zero)
    try:
        yield
    finally:
        handle.remove()


def score_with_vit_zeroed(cfg: StudyConfig, checkpoint: Path, test: Sequence[VolumeSpec]) -> dict:
    """Per-volume scores of a fine-tuned checkpoint whose ViT outputs are zeroed."""
    from tpem_seg.train import engine
    from tpem_seg.train.evaluate import evaluate_checkpoint, labelled_volume, load_segmentation_model

    device = engine.resolve_device(cfg.device)
    model, ckpt = load_segmentation_model(checkpoint, device)
    volumes = [labelled_volume(s, bool(ckpt.meta.get("binary_labels", True)), ckpt.config.out_channels) for s in test]
    with vit_zeroed(model):
        return evaluate_checkpoint(model, ckpt, volumes, device, cfg.eval_overlap, cfg.eval_batch).per_volume


def run_probe(cfg: StudyConfig, results: Results, specs: dict[str, VolumeSpec],
              encoder: Callable[[int, str], str], folds: Sequence[int]) -> None:
    """The frozen-encoder probe on ``cfg.diagnostics.probe_folds`` among ``folds``: the primary arm's
    encoder against a random one."""
    d = cfg.diagnostics
    budget = cfg.budget(d.probe_labels)
    seed = cfg.seeds[0]
    for k in (f for f in d.probe_folds if f in folds):
        train, test = fold_split(cfg, specs, k)
        for arm in (cfg.primary.arm, "scratch"):
            key = dict(table="probe", fold=k, arm=arm, labels=budget.name, seed=seed)
            if results.has(**key):
                continue
            pretrained = None if arm == "scratch" else encoder(k, arm)
            ft = finetune_config(cfg, train, pretrained, budget, seed, Path(cfg.out) / "probe" / f"fold{k}-{arm}",
                                 steps=d.probe_steps, encoder_lr_scale=0.0, log_every=max(1, d.probe_steps // 5))
            results.add({**key, **finetune_and_score(cfg, ft, test)})


def reconstruction_vs_trivial(checkpoint: str, volumes: Sequence[VolumeSpec], batches: int, device: str,
                              seed: int = 0) -> dict[str, float]:
    """Masked L1 of a MIM checkpoint and of the mean-of-visible-voxels predictor on ``batches``
    batches of un-augmented tiles of ``volumes`` (their labels unused), masked as in its pretraining.

    Returns ``{"model": L1, "trivial": L1, "ratio": model / trivial, "tiles": n}`` (L1 averaged
    over batches, each over its masked valid voxels; normalised intensity units).
    """
    import torch

    from tpem_seg.models.checkpoint import load_checkpoint
    from tpem_seg.models.manifest import NormalizationSpec
    from tpem_seg.train import engine
    from tpem_seg.train.data import PatchSampler, load_volumes
    from tpem_seg.train.mim import MIMModel, masked_l1
    from tpem_seg.train.pretrain import masked_batch

    ckpt = load_checkpoint(checkpoint)
    pc = from_dict(PretrainConfig, ckpt.meta["train_config"], where=str(checkpoint))
    dev = engine.resolve_device(device)
    model = MIMModel(ckpt.config, ckpt.meta["mask_space"])
    model.load_state_dict(ckpt.model)
    model.to(dev).eval()
    unlabelled = [VolumeSpec(v.image, None, v.axes, v.spacing, v.channels, v.name) for v in volumes]
    tile = ckpt.config.tile
    loaded = load_volumes(unlabelled, tile, NormalizationSpec(**ckpt.meta["normalization"]), ckpt.config.in_channels)
    sampler = PatchSampler(loaded, tile, np.random.default_rng(seed), augment=None)
    model_l1, trivial_l1 = [], []
    with torch.no_grad():
        for _ in range(batches):
            x, mask, valid = (torch.from_numpy(a).to(dev) for a in masked_batch(sampler, pc))
            model_l1.append(float(masked_l1(model(x, mask).float(), x, mask, valid)))
            trivial_l1.append(float(masked_l1(visible_mean(x, mask, valid), x, mask, valid)))
    out = {"model": float(np.mean(model_l1)), "trivial": float(np.mean(trivial_l1)), "tiles": batches * pc.batch_size}
    return {**out, "ratio": out["model"] / out["trivial"]}


def visible_mean(x, mask, valid):
    """The trivial reconstruction: each tile's and channel's mean over its visible valid voxels,
    broadcast to ``x``'s shape ``(N, C, D, H, W)``; ``mask`` True = hidden, ``valid (N, D, H, W)``."""
    seen = (~mask & valid.unsqueeze(1)).to(x.dtype)
    mean = (x * seen).sum(dim=(2, 3, 4), keepdim=True) / seen.sum(dim=(2, 3, 4), keepdim=True).clamp(min=1.0)
    return mean.expand_as(x)
