"""--cluster parsing and the job scripts dask-jobqueue generates (nothing is submitted)."""

import json

import pytest

from tpem_seg.distributed.cluster import jobqueue_cluster, parse_cluster
from tpem_seg.errors import InputError

pytest.importorskip("dask_jobqueue")


def test_cluster_specs_parse_and_bad_ones_are_refused(tmp_path):
    assert parse_cluster("local:3").workers == 3
    assert parse_cluster("tcp://node7:8786").address == "tcp://node7:8786"
    (tmp_path / "lsf.json").write_text(json.dumps({"cores": 4, "jobs": 8}))
    spec = parse_cluster("lsf", tmp_path / "lsf.json")
    assert (spec.kind, spec.config) == ("lsf", {"cores": 4, "jobs": 8})
    for bad in ("local:0", "tcp://nohost", "kubernetes"):
        with pytest.raises(InputError, match="--cluster"):
            parse_cluster(bad)
    (tmp_path / "list.yaml").write_text("- cores\n")
    with pytest.raises(InputError, match="mapping"):
        parse_cluster("slurm", tmp_path / "list.yaml")


@pytest.mark.parametrize("kind, gpu_line", [("slurm", "#SBATCH --gres=gpu:1"), ("lsf", '#BSUB -gpu "num=1"')])
def test_job_scripts_ask_for_one_gpu_per_worker_and_the_configured_cores(tmp_path, kind, gpu_line):
    (tmp_path / "c.yaml").write_text("cores: 6\nmemory: 24GB\nwalltime: '02:00'\njobs: 4\n")
    spec = parse_cluster(kind, tmp_path / "c.yaml")
    with jobqueue_cluster(spec, gpu=True) as cluster:
        script = cluster.job_script()
    assert gpu_line in script.splitlines()
    assert "--resources GPU=1" in script and "--nthreads 6" in script
    assert ("--cpus-per-task=6" if kind == "slurm" else "#BSUB -n 6") in script
    with jobqueue_cluster(spec, gpu=False) as cluster:
        cpu_script = cluster.job_script()
    assert "gpu" not in cpu_script.lower() and "--resources" not in cpu_script
