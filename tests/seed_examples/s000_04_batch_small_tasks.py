"""Seed 000 "Batch small tasks".

``items`` and the per-item ``process`` are assumed by the seed and defined here.
"""

import quanta as ray

ray.init(num_cpus=2)


def process(i):  # assumed by the seed: a plain (not remote) per-item function
    return i * i


items = list(range(1000))  # assumed by the seed


@ray.remote
def process_batch(items):
    return [process(i) for i in items]


batches = [items[i:i+128] for i in range(0, len(items), 128)]
results = ray.get([process_batch.remote(b) for b in batches])

assert len(results) == 8
assert [x for batch in results for x in batch] == [i * i for i in items]
print("batches:", len(results), "items:", sum(len(b) for b in results))
