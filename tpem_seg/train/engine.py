"""What the training loops share: devices, torchrun/DDP, seeds, the LR schedule, AMP, logging helpers.

Multi-GPU runs go through ``torchrun --nproc_per_node N``: it sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``, and :func:`setup_distributed` joins the process
group (NCCL on GPUs, gloo on CPUs). Without those variables everything runs in
one process.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as torch_dist

from tpem_seg.errors import TpemSegError

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when a GPU is present, else ``cpu``; checks ``cuda`` requests."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TpemSegError(f"--device {name} asked for a GPU but torch sees none; use --device cpu")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name != "cpu":
        raise TpemSegError(f"device {name!r} unknown; use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def setup_distributed(device_name: str, threads: int | None = None) -> DistInfo:
    """Join the torchrun process group if there is one; pick this process's device."""
    if threads:
        torch.set_num_threads(threads)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not torch_dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        log.info("rank %d of %d on %s", rank, world_size, device)
    return DistInfo(rank, world_size, local_rank, device)


def cleanup_distributed() -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def mean_across_ranks(value: float, dist: DistInfo) -> float:
    """The mean of a scalar over all processes (the value itself in a single process)."""
    if not dist.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=dist.device)
    torch_dist.all_reduce(t)
    return float(t.item()) / dist.world_size


def barrier(dist: DistInfo) -> None:
    if dist.distributed:
        torch_dist.barrier()


def wrap_ddp(model: torch.nn.Module, dist: DistInfo) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` in a multi-process run, else ``model`` itself."""
    if not dist.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def freeze_unused(model: torch.nn.Module) -> int:
    """Freeze parameters no forward pass uses: MONAI's ViT blocks always create a cross-attention
    LayerNorm (``norm_cross_attn``) that only runs with cross-attention, which UNETR never uses.
    DDP requires every trainable parameter to get a gradient; frozen ones are exempt."""
    frozen = 0
    for name, p in model.named_parameters():
        if "norm_cross_attn" in name:
            p.requires_grad_(False)
            frozen += 1
    return frozen


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def no_sync(model: torch.nn.Module, sync: bool):
    """Skip DDP's gradient all-reduce on accumulation micro-steps (``sync=False``)."""
    return nullcontext() if sync or not hasattr(model, "no_sync") else model.no_sync()


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) for identical weight initialisation on every rank."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def data_rng(seed: int, rank: int) -> np.random.Generator:
    """Each rank draws different patches; the same seed and rank draw the same ones."""
    return np.random.default_rng([seed, rank])


def lr_at(step: int, total: int, base_lr: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio * base_lr`` at ``total``."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return base_lr * (min_ratio + (1.0 - min_ratio) * cosine)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def param_groups(model: torch.nn.Module, weight_decay: float, encoder_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms, position embeddings and mask tokens (1-D or
    embedding-like tensors); the ViT encoder (``vit.*``) at ``encoder_lr_scale`` times the LR."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and "position_embeddings" not in name and "mask_token" not in name
        encoder = name.startswith("vit.")
        groups.setdefault((decay, encoder), []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0,
             "lr_scale": encoder_lr_scale if encoder else 1.0}
            for (decay, encoder), params in groups.items()]


@dataclass
class Precision:
    """Autocast dtype (None: fp32) and the gradient scaler (active for fp16 only)."""

    dtype: torch.dtype | None
    scaler: Any

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)


def precision_for(device: torch.device, amp: bool) -> Precision:
    """AMP on CUDA only: bf16 where the GPU supports it (no scaler needed), else fp16 with a scaler."""
    if not amp or device.type != "cuda":
        return Precision(None, torch.amp.GradScaler("cuda", enabled=False))
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Precision(dtype, torch.amp.GradScaler("cuda", enabled=dtype is torch.float16))


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
                   grad_clip: float) -> None:
    """One AMP-aware update: unscale, clip the gradient norm to ``grad_clip``, step, zero the gradients."""
    precision.scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    precision.scaler.step(optimizer)
    precision.scaler.update()
    optimizer.zero_grad(set_to_none=True)


def train_step(step: int, config, ddp_model: torch.nn.Module, model: torch.nn.Module,
               optimizer: torch.optim.Optimizer, precision: Precision, dist: DistInfo,
               micro_loss: Callable[[], torch.Tensor]) -> tuple[float, float]:
    """One optimiser step at the scheduled LR over ``config.grad_accum`` micro-batches, each
    ``micro_loss()`` (draws a batch, runs ``ddp_model``; called under autocast, gradients synchronised
    on the last one). Returns ``(lr, loss averaged over the micro-batches)``."""
    lr = lr_at(step, config.steps, config.lr, config.warmup_steps, config.min_lr_ratio)
    set_lr(optimizer, lr)
    total = 0.0
    for micro in range(config.grad_accum):
        with no_sync(ddp_model, sync=micro == config.grad_accum - 1), precision.autocast(dist.device):
            loss = micro_loss() / config.grad_accum
        precision.scaler.scale(loss).backward()
        total += loss.item()
    optimizer_step(model, optimizer, precision, config.grad_clip)
    return lr, total


class StepLog:
    """The loss and patches/s of the steps since the last report; reports every ``config.log_every``
    steps and at the last one (on ``bar``, and in the log from the main process). ``last_loss`` is
    the mean loss of the latest report (averaged over the ranks), NaN before the first."""

    def __init__(self, config, dist: DistInfo, bar) -> None:
        self.config, self.dist, self.bar = config, dist, bar
        self.last_loss = float("nan")
        self._sum, self._n = 0.0, 0
        self._t, self._patches = time.perf_counter(), 0

    def add(self, step: int, lr: float, loss: float) -> None:
        """Record optimiser step ``step`` (0-based) and report when due."""
        config = self.config
        self._sum += loss
        self._n += 1
        self._patches += config.batch_size * config.grad_accum * self.dist.world_size
        done = step + 1
        if done % config.log_every and done != config.steps:
            return
        self.last_loss = mean_across_ranks(self._sum / self._n, self.dist)
        now = time.perf_counter()
        rate = self._patches / max(now - self._t, 1e-9)
        self._sum, self._n, self._t, self._patches = 0.0, 0, now, 0
        self.bar.set_postfix(loss=f"{self.last_loss:.4f}", lr=f"{lr:.2e}", patches_s=f"{rate:.1f}")
        if self.dist.is_main:
            log.info("step %d/%d  loss %.4f  lr %.2e  %.1f patches/s", done, config.steps, self.last_loss, lr, rate)


def move(arrays: Iterable[np.ndarray | None], device: torch.device) -> list[torch.Tensor | None]:
    """numpy arrays -> tensors on ``device`` (None passes through)."""
    return [None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device, non_blocking=True)
            for a in arrays]


def check_in_sync(model: torch.nn.Module, dist: DistInfo) -> None:
    """In a multi-process run, verify every rank ended with the same weights (DDP keeps them so).

    A divergence is a bug (e.g. a rank skipped an optimiser step), never a user error.
    """
    if not dist.distributed:
        return
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1).to(dist.device)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.world_size)]
    torch_dist.all_gather(gathered, checksum)
    values = [float(g.item()) for g in gathered]
    if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
        raise RuntimeError(f"DDP replicas diverged: weight checksums per rank {values}")
    if dist.is_main:
        log.info("%d ranks in sync: weight checksum %.6f on every rank", dist.world_size, values[0])
