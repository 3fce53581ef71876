"""Seed 003 "Anti-pattern: Fetching Too Many Objects at Once" and the batched solution.
``return_big_object`` (shrunk from seed 001's 80 MB to 160 KB, still stored in shared memory)
and ``process_results`` are assumed by the seed and defined here."""

import numpy as np
import quanta as ray

ray.init(num_cpus=2)


@ray.remote
def return_big_object():  # assumed by the seed (from seed 001, shrunk)
    return np.zeros(1024 * 20)


batches = []


def process_results(results):  # assumed by the seed
    assert all(r.shape == (1024 * 20,) for r in results)
    batches.append(len(results))


object_refs = [return_big_object.remote() for _ in range(1000)]
results = ray.get(object_refs) # May fail with OOM
assert len(results) == 1000  # added
del results  # added

BATCH_SIZE = 100
while object_refs:
    ready_object_refs, object_refs = ray.wait(object_refs, num_returns=BATCH_SIZE)
    results = ray.get(ready_object_refs)
    process_results(results)

assert batches == [100] * 10, batches  # added
print("processed", sum(batches), "objects in", len(batches), "batches")
