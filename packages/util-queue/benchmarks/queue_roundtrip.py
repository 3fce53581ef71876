"""Queue round trips between two tasks, under Quanta or Ray.

    python queue_roundtrip.py quanta        # import quanta as ray
    python queue_roundtrip.py ray           # the real Ray
    python queue_roundtrip.py quanta -n 5000 --repeat 3 --json

Rows:

* ``stream``: a producer task puts N items into an unbounded queue while a consumer task gets
  them (one ``put`` / ``get`` call per item); items/s is N over the time from submitting both
  tasks to both finishing.
* ``stream bounded``: the same through a queue of ``maxsize=16``, so the producer is held
  back by the consumer (back-pressure on the blocking ``put``).
* ``ping-pong``: two queues; task A puts i into the first and waits for it back on the second,
  task B gets from the first and puts into the second. Round trips/s is N over the time;
  each round trip is four queue calls, strictly one after another.

The worker processes are warmed up (the tasks and the queue actors are run once with a few
items) before anything is timed. Each row is run ``--repeat`` times; the best and the median
are printed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", choices=["quanta", "ray"], help="the runtime to import as ray")
    parser.add_argument("-n", type=int, default=2000, help="items per run (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (default 3)")
    parser.add_argument("--num-cpus", type=int, default=2, help="init(num_cpus=...)")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args()

    ray = importlib.import_module(args.module)
    if args.module == "ray":
        from ray.util.queue import Queue
    else:
        Queue = ray.util.queue.Queue  # noqa: N806 - published by the quanta-util-queue plugin

    ray.init(num_cpus=args.num_cpus, include_dashboard=False) if args.module == "ray" \
        else ray.init(num_cpus=args.num_cpus)

    @ray.remote
    def produce(q, n):
        for i in range(n):
            q.put(i)
        return n

    @ray.remote
    def consume(q, n):
        total = 0
        for _ in range(n):
            total += q.get()
        return total

    @ray.remote
    def ping(q_out, q_back, n):
        for i in range(n):
            q_out.put(i)
            if q_back.get() != i:
                raise AssertionError("ping-pong out of order")
        return n

    @ray.remote
    def pong(q_in, q_out, n):
        for _ in range(n):
            q_out.put(q_in.get())
        return n

    def stream(q, n):
        t0 = time.perf_counter()
        refs = [consume.remote(q, n), produce.remote(q, n)]
        total, _ = ray.get(refs)
        dt = time.perf_counter() - t0
        assert total == n * (n - 1) // 2, total
        return dt

    def ping_pong(q1, q2, n):
        t0 = time.perf_counter()
        ray.get([pong.remote(q1, q2, n), ping.remote(q1, q2, n)])
        return time.perf_counter() - t0

    n = args.n
    unbounded, bounded = Queue(), Queue(maxsize=16)
    q1, q2 = Queue(), Queue()
    # warm-up: workers, function exports, the queue actors
    stream(unbounded, 50)
    stream(bounded, 50)
    ping_pong(q1, q2, 50)

    rows: dict[str, list[float]] = {"stream": [], "stream bounded": [], "ping-pong": []}
    for _ in range(args.repeat):
        rows["stream"].append(n / stream(unbounded, n))
        rows["stream bounded"].append(n / stream(bounded, n))
        rows["ping-pong"].append(n / ping_pong(q1, q2, n))

    for q in (unbounded, bounded, q1, q2):
        q.shutdown()
    ray.shutdown()

    print(f"{args.module} (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"N={n}, {args.repeat} runs)")
    for name, values in rows.items():
        unit = "round trips/s" if name == "ping-pong" else "items/s"
        print(f"  {name:<16} best {max(values):>9.0f} {unit:<13}  median "
              f"{statistics.median(values):>9.0f}")
    if args.json:
        print(json.dumps({"module": args.module, "n": n,
                          **{k: {"best": max(v), "median": statistics.median(v), "runs": v}
                             for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
