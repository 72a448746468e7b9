"""A run on a Dask cluster (the ``dask`` extra): the same partitions a run in one process has,
each scored on a worker.

- :mod:`~offerflow.distributed.cluster`: a scheduler's cluster, or a local one for the run;
- :mod:`~offerflow.distributed.split`: the input split into a bucket per partition, on the cluster;
- :mod:`~offerflow.distributed.scoring`: one partition scored on a worker;
- :mod:`~offerflow.distributed.driver`: the run, driven from here.

Nothing else of offerflow imports this package: ``offerflow run --backend dask`` imports it.
"""

from __future__ import annotations

from offerflow.distributed.driver import DaskOptions, run_on_dask

__all__ = ["DaskOptions", "run_on_dask"]
