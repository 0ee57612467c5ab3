"""A LocalCluster of 2 worker processes with 1 thread each, shared by the distributed tests."""

import pytest

pytest.importorskip("distributed")


@pytest.fixture(scope="package")
def client():
    """The shared client; dask's LocalCluster writes its workers' settings (MALLOC_TRIM_THRESHOLD_,
    OMP_NUM_THREADS=1, ...) into this process's environment, so the environment is put back after."""
    import os

    from distributed import Client, LocalCluster

    saved = dict(os.environ)
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as connected:
            yield connected
    finally:
        os.environ.clear()
        os.environ.update(saved)
