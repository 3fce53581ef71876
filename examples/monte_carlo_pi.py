"""Estimate pi with Monte Carlo sampling spread over Quanta tasks.

Ray's Monte Carlo pi example, on tasks only: N sampling tasks each throw random points at the
unit square and count the ones inside the quarter circle. The driver follows the tasks with
``ray.wait`` and prints its progress as they finish, then combines the counts:

    pi ~= 4 * inside / total

Run it with ``./scripts/demo`` (or ``python examples/monte_carlo_pi.py`` once quanta-core is
installed). It uses only the standard library and ``quanta``.
"""

from __future__ import annotations

import math
import random
import time

import quanta as ray

NUM_SAMPLING_TASKS = 20
NUM_SAMPLES_PER_TASK = 200_000


@ray.remote
def sampling_task(num_samples: int, seed: int) -> int:
    """Throw ``num_samples`` random points at the unit square; return how many land inside
    the quarter circle of radius 1."""
    rng = random.Random(seed)
    rand = rng.random
    inside = 0
    for _ in range(num_samples):
        x = rand()
        y = rand()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside


def main() -> None:
    start = time.perf_counter()
    ray.init()
    print(f"Cluster resources: {ray.cluster_resources().get('CPU', 0):g} CPUs")

    refs = [sampling_task.remote(NUM_SAMPLES_PER_TASK, seed) for seed in range(NUM_SAMPLING_TASKS)]

    inside = 0
    done = 0
    pending = refs
    last_percent = 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=None)
        inside += sum(ray.get(ready))
        done += len(ready)
        percent = done * 100 // NUM_SAMPLING_TASKS
        if percent // 10 > last_percent // 10:  # one line per 10%
            print(f"Progress: {percent}%")
            last_percent = percent

    total = NUM_SAMPLING_TASKS * NUM_SAMPLES_PER_TASK
    pi = 4 * inside / total
    elapsed = time.perf_counter() - start
    print(
        f"Estimated value of pi is: {pi:.5f} (error {abs(pi - math.pi):.5f}, "
        f"{total:,} samples in {NUM_SAMPLING_TASKS} tasks, {elapsed:.2f} s)"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
