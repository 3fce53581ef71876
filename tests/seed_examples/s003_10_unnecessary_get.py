"""Seed 003 "Anti-pattern: Calling ray.get() Unnecessarily" and its solution.
``generate_rollout`` and ``reduce`` are assumed by the seed: defined as in seed 001, shrunk
from np.ones((10000, 10000)) (800 MB) to np.ones((1000, 1000)) (8 MB)."""

import numpy as np
import quanta as ray

ray.init(num_cpus=2)


@ray.remote
def generate_rollout():  # assumed by the seed (from seed 001)
    return np.ones((1000, 1000))


@ray.remote
def reduce(rollout):  # assumed by the seed (from seed 001)
    return np.sum(rollout)


# Downloads result, then reuploads it
rollout = ray.get(generate_rollout.remote())
reduced = ray.get(reduce.remote(rollout))
assert reduced == 1_000_000  # added

# Pass reference - object stays in object store
rollout_obj_ref = generate_rollout.remote()
reduced = ray.get(reduce.remote(rollout_obj_ref))
assert reduced == 1_000_000  # added
print("reduced:", reduced)
