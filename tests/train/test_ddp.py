"""Multi-process training through torchrun: two CPU processes, gloo backend, DistributedDataParallel.

The loops check at the end that both replicas hold identical weights (engine.check_in_sync)
and log it; a divergence raises, and the run exits non-zero.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "tpem_seg.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stderr


def test_pretrain_and_finetune_with_two_gloo_processes(tmp_path):
    from tpem_seg.io import write_volume
    from tpem_seg.models.checkpoint import load_checkpoint

    rng = np.random.default_rng(0)
    image = rng.integers(0, 100, size=(16, 48, 48)).astype(np.uint16)
    labels = np.zeros(image.shape, np.uint8)
    labels[:, 20:28, :] = 1
    image[labels == 1] += 400
    write_volume(tmp_path / "img.tif", image, axes="ZYX", spacing=(2.0, 1.0, 1.0))
    write_volume(tmp_path / "lab.tif", labels, axes="ZYX", spacing=(2.0, 1.0, 1.0))
    common = ["--model", "unetr-test", "--in-channels", "1", "--steps", "4", "--batch-size", "2", "--device", "cpu",
              "--no-progress", "--set", "log_every=2", "--set", "warmup_steps=1", "--set", "grad_accum=2"]

    log = torchrun(["train", "pretrain", "--train", "img.tif", "-o", "pre", *common], tmp_path)
    assert "rank 1 of 2" in log and "2 ranks in sync" in log, log[-3000:]
    log = torchrun(["train", "finetune", "--train", "img.tif=lab.tif", "--val", "img.tif=lab.tif",
                    "--pretrained", "pre/last.pt", "-o", "ft", *common], tmp_path)
    assert "2 ranks in sync" in log and "loaded 161/161 encoder tensors" in log, log[-3000:]
    ckpt = load_checkpoint(tmp_path / "ft" / "best.pt")
    assert ckpt.kind == "finetune" and "dice/mean" in ckpt.meta["metrics"]
    assert not any(k.startswith("module.") for k in ckpt.model)
