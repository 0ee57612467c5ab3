"""A LocalCluster of 2 worker processes with 1 thread each, shared by the distributed tests."""

import pytest

pytest.importorskip("distributed")


@pytest.fixture(scope="package")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as connected:
        yield connected
