"""A cluster of 4 node daemons on this machine: 10,000 tasks, then 1 GB of objects moved.

    python benchmarks/four_nodes.py [--tasks 10000] [--gb 1] [--cpus-per-node 1]

Starts a head and 3 members (``quanta.cluster_utils.Cluster``, real daemons joined over
loopback TCP), connects a driver to the head and measures:

* start-up: from nothing to 4 nodes that all know each other;
* ``--tasks`` small tasks submitted at once with the DEFAULT strategy, and as many with
  ``SPREAD``: tasks per second and how many ran on each node;
* moving ``--gb`` gigabytes: 16 tasks each make an array (``--gb``/16) on one node (node
  affinity), and 16 others, each pinned to the next node round the ring, sum one of them, so
  every array is pulled from one node's store to another's. Reports the bytes moved and the
  rate.
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np
import quanta
from quanta.cluster_utils import Cluster
from quanta.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@quanta.remote
def node_of(i: int) -> str:
    return quanta.get_runtime_context().get_node_id()


@quanta.remote
def make(n: int, seed: int):
    return np.full(n, seed, dtype=np.int64)


@quanta.remote
def consume(arr) -> int:
    return int(arr[0]) * len(arr)


def _tasks(n: int, strategy: str) -> tuple[float, collections.Counter]:
    t = time.perf_counter()
    where = quanta.get([node_of.options(scheduling_strategy=strategy).remote(i)
                        for i in range(n)])
    return n / (time.perf_counter() - t), collections.Counter(where)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--gb", type=float, default=1.0)
    p.add_argument("--cpus-per-node", type=float, default=1.0)
    args = p.parse_args()
    per_object = int(args.gb * 1e9 / 16) // 8
    store = max(int(args.gb * 1e9) * 2 // 4 + (256 << 20), 512 << 20)
    node_args = {"num_cpus": args.cpus_per_node, "object_store_memory": store}
    t0 = time.perf_counter()
    c = Cluster(initialize_head=True, head_node_args=dict(node_args))
    try:
        for _ in range(3):
            c.add_node(wait=False, **node_args)
        c.wait_for_nodes()
        startup = time.perf_counter() - t0
        c.connect()
        nodes = [c.head_node.node_id] + [n.node_id for n in c.worker_nodes]
        short = {n: f"node{i}" for i, n in enumerate(nodes)}
        print(f"4 nodes up and joined in {startup:.2f} s")
        quanta.get([node_of.options(scheduling_strategy="SPREAD").remote(i)
                    for i in range(200)])  # warm the workers of every node
        for strategy in ("DEFAULT", "SPREAD"):
            rate, where = _tasks(args.tasks, strategy)
            spread = ", ".join(f"{short[n]}: {where[n]}" for n in nodes)
            print(f"{args.tasks} tasks, {strategy}: {rate:,.0f} tasks/s ({spread})")

        def on(i: int) -> NodeAffinitySchedulingStrategy:
            return NodeAffinitySchedulingStrategy(nodes[i % 4], soft=False)

        t = time.perf_counter()
        arrays = [make.options(scheduling_strategy=on(i)).remote(per_object, i)
                  for i in range(16)]
        quanta.wait(arrays, num_returns=16, fetch_local=False)
        made = time.perf_counter() - t
        t = time.perf_counter()
        sums = quanta.get([consume.options(scheduling_strategy=on(i + 1)).remote(a)
                           for i, a in enumerate(arrays)])
        moved_s = time.perf_counter() - t
        assert sums == [i * per_object for i in range(16)], sums
        moved = 16 * per_object * 8
        print(f"made 16 arrays of {per_object * 8 / 1e6:.0f} MB on 4 nodes in {made:.2f} s; "
              f"moved {moved / 1e9:.2f} GB between nodes (each array pulled to the next "
              f"node) and summed in {moved_s:.2f} s: {moved / 1e9 / moved_s:.2f} GB/s")
    finally:
        c.shutdown()


if __name__ == "__main__":
    main()
