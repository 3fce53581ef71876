"""Seed 001 "Antipattern: Closure capture of large / unserializable object" -- better approach
#2: capture a lambda that creates the array inside the task.

Shrunk: np.zeros(100 * 1024 * 1024) (800 MB) -> np.zeros(1024 * 1024) (8 MB).
"""
# ruff: noqa: E731

import numpy as np
import quanta as ray

array_creator = lambda: np.zeros(1024 * 1024)  # shrunk from 100 * 1024 * 1024

@ray.remote
def f():
    array = array_creator()
    return len(array)

ray.init()
ray.get(f.remote())

assert ray.get(f.remote()) == 1024 * 1024  # added
print("len:", ray.get(f.remote()))
