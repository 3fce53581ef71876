"""Seed 001 "Antipattern: Closure capture of large / unserializable object" -- the antipattern
(a large global array serialized along with the function). It is slow, not wrong: it must work.

Shrunk: np.zeros(100 * 1024 * 1024) (800 MB) -> np.zeros(1024 * 1024) (8 MB).
"""

import numpy as np
import quanta as ray

# Create a 838 MB array, verify via: sys.getsizeof(big_array)

big_array = np.zeros(1024 * 1024)  # shrunk from 100 * 1024 * 1024

@ray.remote
def f():
    return len(big_array) # big_array is serialized along with f!

ray.init()
ray.get(f.remote())

assert ray.get(f.remote()) == 1024 * 1024  # added
print("len:", ray.get(f.remote()))
