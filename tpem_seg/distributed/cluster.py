"""Where the workers come from: ``--cluster local:N | tcp://HOST:PORT | slurm | lsf``.

- ``local:N``: N worker processes on this machine (dask-cuda's ``LocalCUDACluster``, one worker
  per GPU, where the device is CUDA and dask-cuda is installed); ``--cluster-config`` may add
  ``LocalCluster`` keyword arguments (e.g. ``memory_limit``);
- ``tcp://HOST:PORT``: a running scheduler (``dask scheduler``; workers started with
  ``dask worker tcp://HOST:PORT --nthreads C`` and, for GPUs, ``--resources GPU=1``, one per GPU);
- ``slurm`` / ``lsf``: dask-jobqueue submits worker jobs. ``--cluster-config FILE`` (YAML or JSON)
  holds its keyword arguments (``cores``, ``memory``, ``queue``, ``walltime``, ``account``,
  ``job_extra_directives``...) and ``jobs``, how many worker jobs to start (default 1). For a CUDA
  device every job asks for one GPU (``--gres=gpu:1``, LSF ``-gpu "num=1"``) and runs one worker
  with the resource ``GPU=1``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tpem_seg.errors import InputError

log = logging.getLogger(__name__)

KINDS = ("local", "tcp", "slurm", "lsf")
#: What each job system's job script needs to ask for one GPU.
GPU_DIRECTIVES = {"slurm": "--gres=gpu:1", "lsf": '-gpu "num=1"'}
GPU_RESOURCE = "GPU"


@dataclass(frozen=True)
class ClusterSpec:
    """Parsed ``--cluster``: kind (one of :data:`KINDS`); workers (``local:N``); address (``tcp://``);
    config: dask-jobqueue keyword arguments (slurm, lsf), ``jobs`` among them."""

    kind: str
    workers: int = 0
    address: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


def require_dask() -> None:
    """Raise InputError naming the extra to install when dask.distributed is missing."""
    import importlib.util

    missing = [m for m in ("distributed", "dask_jobqueue") if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"distributed runs need {' and '.join(missing)}: pip install 'tpem-seg[distributed]'")


def parse_cluster(text: str, config_file: str | os.PathLike | None = None) -> ClusterSpec:
    """``--cluster TEXT [--cluster-config FILE]`` as a :class:`ClusterSpec`; InputError when malformed."""
    hint = "use local:N, tcp://HOST:PORT, slurm or lsf, e.g. --cluster local:2"
    config = load_config(config_file) if config_file is not None else {}
    text = text.strip()
    if text.startswith("tcp://"):
        host, _, port = text[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit():
            raise InputError(f"--cluster {text}: {hint}")
        return ClusterSpec("tcp", address=text)
    if text.startswith("local:") or text == "local":
        count = text.partition(":")[2] or str(max(1, (os.cpu_count() or 2) // 2))
        if not count.isdigit() or int(count) < 1:
            raise InputError(f"--cluster {text}: the worker count must be a positive number; {hint}")
        return ClusterSpec("local", workers=int(count), config=config)
    if text in ("slurm", "lsf"):
        return ClusterSpec(text, config=config)
    raise InputError(f"--cluster {text} is not a cluster; {hint}")


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """The keyword arguments in a YAML or JSON file (a mapping at top level)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot read --cluster-config {path} ({err.strerror or err}); check the path") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ValueError as err:  # json.JSONDecodeError and yaml.YAMLError's parse errors
        raise InputError(f"--cluster-config {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {err}") from None
    if not isinstance(data, dict):
        raise InputError(f"--cluster-config {path} must hold a mapping of dask-jobqueue options, e.g. cores: 8")
    return data


def jobqueue_cluster(spec: ClusterSpec, gpu: bool):
    """A dask-jobqueue cluster for ``slurm`` / ``lsf`` (no job is submitted until it is scaled).

    With ``gpu``, each job asks for one GPU, runs one worker process and gives it the resource
    ``GPU=1``; tasks asking for it then run one per GPU.
    """
    import dask_jobqueue

    kwargs = {k: v for k, v in spec.config.items() if k != "jobs"}
    kwargs.setdefault("cores", 1)
    kwargs.setdefault("memory", "8GB")
    if gpu:
        kwargs["processes"] = 1
        directives = list(kwargs.get("job_extra_directives") or [])
        if not any("gpu" in str(d).lower() for d in directives):
            directives.append(GPU_DIRECTIVES[spec.kind])
        kwargs["job_extra_directives"] = directives
        kwargs["worker_extra_args"] = [*kwargs.get("worker_extra_args", []), "--resources", f"{GPU_RESOURCE}=1"]
    cls = dask_jobqueue.SLURMCluster if spec.kind == "slurm" else dask_jobqueue.LSFCluster
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise InputError(f"--cluster {spec.kind}: dask-jobqueue refused the configuration ({err}); "
                         "check --cluster-config") from None


def local_cluster(spec: ClusterSpec, gpu: bool):
    """``local:N`` workers: one process each, the cores shared out, ``GPU=1`` each on CUDA."""
    threads = max(1, (os.cpu_count() or 1) // spec.workers)
    options = dict(spec.config)
    if gpu:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            log.warning("dask-cuda is not installed: %d plain workers share the visible GPUs (pip install "
                        "dask-cuda for one worker per GPU)", spec.workers)
        else:
            return LocalCUDACluster(n_workers=spec.workers, threads_per_worker=threads,
                                    resources={GPU_RESOURCE: 1}, **options)
        options["resources"] = {GPU_RESOURCE: 1}
    from distributed import LocalCluster

    return LocalCluster(n_workers=spec.workers, threads_per_worker=threads, processes=True, **options)


@contextlib.contextmanager
def connect(spec: ClusterSpec, gpu: bool) -> Iterator[Any]:
    """A ``distributed.Client`` on the cluster ``spec`` describes; the cluster (not a tcp one) ends with it."""
    from distributed import Client

    if spec.kind == "tcp":
        with Client(spec.address) as client:
            _check_gpus(client, gpu)
            log.info("dask dashboard: %s", client.dashboard_link)
            yield client
        return
    cluster = local_cluster(spec, gpu) if spec.kind == "local" else jobqueue_cluster(spec, gpu)
    with cluster, Client(cluster) as client:
        if spec.kind in ("slurm", "lsf"):
            cluster.scale(jobs=int(spec.config.get("jobs", 1)))
        log.info("dask dashboard: %s", client.dashboard_link)
        yield client


def _check_gpus(client, gpu: bool) -> None:
    """A CUDA run on a running cluster needs workers that declare ``GPU`` (else no task would start)."""
    if not gpu:
        return
    workers = client.scheduler_info().get("workers", {})
    if workers and not any(GPU_RESOURCE in w.get("resources", {}) for w in workers.values()):
        raise InputError(f"no worker of {client.scheduler.address} declares a GPU; start one worker per GPU "
                         "with `dask worker ADDRESS --resources GPU=1`")
