"""A multi-node Ray cluster in local processes (``ray.cluster_utils.Cluster``), for tests and benchmarks.

The head is the "safe" node: it holds the trial drivers (``TRAIN_DRIVER``) and ``head_cpus`` logical CPUs
for Ray Data tasks and the evaluation replicas. Each simulated cell node offers one CPU and one unit of
``cell_resource``, so a study whose workers ask for one of each places one Train worker per node and
never on the head. Ray is imported only when a cluster is built: set the environment first, since every
node's processes inherit it.
"""
from __future__ import annotations

import time
from typing import Any, Callable

MB = 1024 ** 2
CELL_RESOURCE = "CELL_NODE"


def retry_startup(start: Callable[[], Any], attempts: int = 3) -> Any:
    """Start a node, again if it timed out: Ray gives a raylet 30 s to register, short on a loaded machine."""
    for i in range(attempts):
        try:
            return start()
        except Exception as e:  # noqa: BLE001 - only the startup timeout is retried
            if "timed out during startup" not in str(e) or i == attempts - 1:
                raise
            time.sleep(5)


class LocalCluster:
    """The safe head plus ``cell_nodes`` one-CPU cell nodes, with this process connected as the driver.

    ``nodes`` lists the cell nodes (``ray.cluster_utils`` node handles, each with a ``node_id``), ``head_id``
    is the head's node id;
    ``add`` starts one more, ``remove`` kills one without a graceful drain (a lost node), ``shutdown``
    disconnects and stops every node. A failed start stops the nodes already started.
    """

    def __init__(self, cell_nodes: int, *, head_cpus: int, cell_resource: str = CELL_RESOURCE):
        import ray
        from ray.cluster_utils import Cluster

        self.cell_resource = cell_resource
        self.cluster = Cluster()
        self.nodes: list = []
        self.head_id: str | None = None
        try:
            head = retry_startup(lambda: self.cluster.add_node(num_cpus=head_cpus, resources={"TRAIN_DRIVER": 100},
                                                               object_store_memory=300 * MB, include_dashboard=False))
            self.head_id = head.node_id
            self.nodes = [self._add() for _ in range(cell_nodes)]
            ray.init(address=self.cluster.address, log_to_driver=False)
        except BaseException:
            self.shutdown()
            raise

    def _add(self):
        return retry_startup(lambda: self.cluster.add_node(num_cpus=1, resources={self.cell_resource: 1},
                                                           object_store_memory=200 * MB))

    def add(self) -> str:
        """Start one more cell node; returns its node id."""
        node = self._add()
        self.nodes.append(node)
        return node.node_id

    def remove(self, node_id: str) -> None:
        """Kill the cell node ``node_id`` at once, as a lost machine."""
        node = next(n for n in self.nodes if n.node_id == node_id)
        self.cluster.remove_node(node, allow_graceful=False)
        self.nodes.remove(node)

    def shutdown(self) -> None:
        """Disconnect this driver and stop every node."""
        import ray

        ray.shutdown()
        self.cluster.shutdown()
