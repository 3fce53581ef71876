"""Seed 001 "Pattern: Using ray.wait to limit the number of in flight tasks", task version.

The seed sends the work to an actor (``actor.heavy_compute.remote``); actors are covered by the
actors issue, so here ``heavy_compute`` is a remote function and the calls are
``heavy_compute.remote(large_array)``. Everything else is the seed's code.

Shrunk: 1_000_000 iterations -> 300, np.zeros(1_000_000) -> np.zeros(100_000) (800 KB, still
passed through the object store), 1000 calls in flight -> 50.
"""

import numpy as np
import quanta as ray

ray.init(num_cpus=2)

N = 300          # seed: 1_000_000
SIZE = 100_000   # seed: 1_000_000
IN_FLIGHT = 50   # seed: 1000


@ray.remote
def heavy_compute(large_array):
    # taking a long time...
    return float(large_array.sum()) + 1.0


# Without backpressure
result_refs = []
for i in range(N):  # noqa: B007  (seed: i unused in the first loop)
    large_array = np.zeros(SIZE)
    result_refs.append(heavy_compute.remote(large_array))
results = ray.get(result_refs)
assert results == [1.0] * N  # added

# With backpressure
result_refs = []
for i in range(N):
    large_array = np.zeros(SIZE)

    # Allow 1000 in flight calls
    # For example, if i = 5000, this call blocks until that
    # 4000 of the object_refs in result_refs are ready
    # and available.
    if len(result_refs) > IN_FLIGHT:
        num_ready = i-IN_FLIGHT
        ray.wait(result_refs, num_returns=num_ready)
        # added check: at least num_ready results are now ready
        ready, _ = ray.wait(result_refs, num_returns=len(result_refs), timeout=0)
        assert len(ready) >= num_ready, (len(ready), num_ready)

    result_refs.append(heavy_compute.remote(large_array))

assert ray.get(result_refs) == [1.0] * N  # added
print("with backpressure:", len(result_refs), "results")
