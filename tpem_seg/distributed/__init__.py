"""Distributed runs on dask.distributed: the runtime's blocks on many workers, exact and resumable.

A run is the same block computation as :mod:`tpem_seg.runtime.blocks` on one machine (every tile of
the global plan touching a block's core, the volume's one normaliser, the one stitch loop), so its
output is bit-identical to a :class:`~tpem_seg.runtime.Segmenter` run. Blocks go to dask workers as
tasks of numbers (:mod:`~tpem_seg.distributed.spec`); each worker holds one backend
(:mod:`~tpem_seg.distributed.worker`); blocks write whole chunks of one OME-Zarr output and a
done-marker (:mod:`~tpem_seg.distributed.store`), so a retried or resumed run redoes nothing that
is done; the driver (:mod:`~tpem_seg.distributed.driver`) publishes the output when complete.
Clusters: :mod:`~tpem_seg.distributed.cluster`. Needs the ``[distributed]`` extra; dask is
imported only when a run starts.
"""

from tpem_seg.distributed.cluster import ClusterSpec, parse_cluster, require_dask
from tpem_seg.distributed.driver import run_distributed

__all__ = ["ClusterSpec", "parse_cluster", "require_dask", "run_distributed"]
