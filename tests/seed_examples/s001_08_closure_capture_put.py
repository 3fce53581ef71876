"""Seed 001 "Antipattern: Closure capture of large / unserializable object" -- better approach
#1: ``ray.put`` the array and ``ray.get`` it inside the task (the ObjectRef is captured).

Changed: the seed calls ``ray.put`` *before* ``ray.init()``. ``put`` initializes the runtime
on first use, so the seed's later ``ray.init()`` raises "already initialized" -- in Ray as in
Quanta. Here ``ray.init()`` is moved above the ``ray.put``.
Shrunk: np.zeros(100 * 1024 * 1024) (800 MB) -> np.zeros(1024 * 1024) (8 MB).
"""

import numpy as np
import quanta as ray

ray.init()  # moved up from below (see the docstring)

big_array = ray.put(np.zeros(1024 * 1024))  # shrunk from 100 * 1024 * 1024

@ray.remote
def f():
    return len(ray.get(big_array))

ray.get(f.remote())

assert ray.get(f.remote()) == 1024 * 1024  # added
print("len:", ray.get(f.remote()))
