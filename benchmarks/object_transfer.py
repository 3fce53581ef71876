"""Object transfer between two node daemons on this machine (loopback TCP).

    python benchmarks/object_transfer.py [--gb 1] [--rounds 3]

Starts a head and a member node (quanta.cluster_utils.Cluster), puts an array of ``--gb``
gigabytes in the head's store from a driver, and has the member's daemon pull it
(``pull_object``: sendfile on the head, receive and write into a new file on the member)
``--rounds`` times, deleting the member's copy after each round, so every round moves the
whole object into fresh pages. Prints GB/s per round.

The object is made once: making a new gigabyte each round measures this VM's memory more
than the transfer (freed guest pages go back to the host, and touching fresh ones again
costs a fault on the host, which varies a lot from round to round).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import quanta
from quanta._private import cluster
from quanta.cluster_utils import Cluster


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=1.0, help="size of each object, GB (1e9 bytes)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    size = int(args.gb * 1e9) // 8 * 8
    store = max(3 * size, 1 << 30)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": store})
    try:
        member = c.add_node(num_cpus=1, object_store_memory=store)
        c.connect()
        head = cluster.rpc(c.head_node.address, "nodes")[0]["NodeAddress"]
        rates = []
        arr = np.arange(size // 8, dtype=np.int64)
        ref = quanta.put(arr)
        del arr
        for i in range(args.rounds):
            t = time.perf_counter()
            cluster.rpc(member.address, "pull_object", head, ref.hex(), timeout=600)
            dt = time.perf_counter() - t
            rates.append(size / dt / 1e9)
            print(f"round {i + 1}: {size / 1e9:.2f} GB in {dt:.3f} s = {rates[-1]:.2f} GB/s",
                  flush=True)
            cluster.rpc(member.address, "free_objects", [ref.hex()])
        del ref
        print(f"object transfer between two nodes (loopback): best {max(rates):.2f} GB/s, "
              f"mean {sum(rates) / len(rates):.2f} GB/s")
    finally:
        c.shutdown()


if __name__ == "__main__":
    main()
