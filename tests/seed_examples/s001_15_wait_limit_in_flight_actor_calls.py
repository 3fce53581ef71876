"""Seed 001 "Pattern: Using ray.wait to limit the number of in flight tasks", actor form
(``actor.heavy_compute.remote``; the same loops over a remote function are
``s001_04_wait_limit_in_flight_tasks.py``).

The seed's ``heavy_compute`` body is ``# taking a long time...``; here it sums the array and
returns the number of the call, so that the script can check that one caller's calls run in
the order they were submitted (an ``__init__`` setting the counter is added).

Shrunk: 1_000_000 iterations -> 300, np.zeros(1_000_000) -> np.zeros(100_000) (800 KB, still
passed through the object store), 1000 calls in flight -> 50.
"""

import numpy as np
import quanta as ray

ray.init(num_cpus=2)  # added: the seed does not init

N = 300          # seed: 1_000_000
SIZE = 100_000   # seed: 1_000_000
IN_FLIGHT = 50   # seed: 1000


@ray.remote
class Actor:
    def __init__(self):  # added
        self.calls = 0

    def heavy_compute(self, large_array):
        # taking a long time...
        assert float(large_array.sum()) == 0.0  # added
        self.calls += 1                          # added
        return self.calls                        # added


# Without backpressure
actor = Actor.remote()
result_refs = []
for i in range(N):  # noqa: B007  (seed: i unused in the first loop)
    large_array = np.zeros(SIZE)
    result_refs.append(actor.heavy_compute.remote(large_array))
results = ray.get(result_refs)
assert results == list(range(1, N + 1)), results[:10]  # added: calls ran in submission order

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

    result_refs.append(actor.heavy_compute.remote(large_array))

assert ray.get(result_refs) == list(range(N + 1, 2 * N + 1))  # added
print("actor with backpressure:", len(result_refs), "calls in order")

ray.shutdown()
