"""Seed 001 "Antipattern: Unnecessary call of ray.get in a task" -- antipattern and fix.

Shrunk: np.ones((10000, 10000)) (800 MB) -> np.ones((1000, 1000)) (8 MB).
"""

import numpy as np
import quanta as ray

ray.init(num_cpus=2)


@ray.remote
def generate_rollout():
    return np.ones((1000, 1000))  # shrunk from (10000, 10000)

@ray.remote
def reduce(rollout):
    return np.sum(rollout)

# Antipattern:
# `ray.get` downloads the result here.
rollout = ray.get(generate_rollout.remote())
# Now we have to reupload `rollout`
reduced = ray.get(reduce.remote(rollout))
assert reduced == 1000 * 1000, reduced  # added

# Better approach:
# Don't need ray.get here.
rollout = generate_rollout.remote()
# Rollout object is passed by reference.
reduced = ray.get(reduce.remote(rollout))
assert reduced == 1000 * 1000, reduced  # added
print("reduced:", reduced)
