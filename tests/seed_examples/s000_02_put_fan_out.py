"""Seed 000 "Fan out with ray.put": write a large object once, pass its ref to many tasks.

``load_dataset`` and ``process`` are assumed by the seed and defined here (an 8 MB array).
"""

import numpy as np
import quanta as ray

ray.init(num_cpus=2)


def load_dataset():
    return np.arange(1_000_000, dtype=np.float64)  # 8 MB


@ray.remote
def process(data, i):
    # the task receives the array itself (not the ref), read from the object store
    assert isinstance(data, np.ndarray) and data.shape == (1_000_000,)
    return float(data[i] * 2)


big = ray.put(load_dataset())
results = ray.get([process.remote(big, i) for i in range(1000)])

assert results == [float(2 * i) for i in range(1000)]
print("fan-out results:", len(results), results[:3])
