"""Throughput of ``ActorPool.map``: 10,000 small items over 4 actors.

Usage: ``python actor_pool_map.py quanta`` or ``python actor_pool_map.py ray`` (the module is
imported as ``ray``; Ray's pool comes from ``ray.util``, Quanta's from the quanta-util-pool
plugin through ``quanta.util``). Prints the items per second of the timed run (after a
warm-up run that starts the actors' workers).
"""

from __future__ import annotations

import argparse
import importlib
import time

N_ITEMS = 10_000
N_ACTORS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", choices=["quanta", "ray"])
    parser.add_argument("--items", type=int, default=N_ITEMS)
    parser.add_argument("--actors", type=int, default=N_ACTORS)
    args = parser.parse_args()

    ray = importlib.import_module(args.module)
    if args.module == "ray":
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(num_cpus=2)
    from importlib import import_module

    ActorPool = import_module(f"{args.module}.util").ActorPool

    @ray.remote
    class A:
        def f(self, x):
            return x

    actors = [A.remote() for _ in range(args.actors)]
    ray.get([a.f.remote(0) for a in actors])  # the actors are up
    pool = ActorPool(actors)
    fn = lambda a, v: a.f.remote(v)  # noqa: E731 - the usual way to call a pool
    assert list(pool.map(fn, range(200))) == list(range(200))  # warm-up

    values = list(range(args.items))
    start = time.perf_counter()
    results = list(pool.map(fn, values))
    elapsed = time.perf_counter() - start
    assert results == values
    print(f"{args.module}: ActorPool.map of {args.items} items over {args.actors} actors: "
          f"{args.items / elapsed:,.0f} items/s ({elapsed:.3f} s)")
    ray.shutdown()


if __name__ == "__main__":
    main()
