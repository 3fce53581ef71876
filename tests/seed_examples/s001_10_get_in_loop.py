"""Seed 001 "Antipattern: Calling ray.get in a loop" -- antipattern and fix.

Changed: the seed's ``f`` is a plain ``def f(): pass`` but is called as ``f.remote(i)``, which
cannot work (in Ray either); here it is ``@ray.remote def f(i)`` returning ``i``.
"""

import quanta as ray

ray.init()

@ray.remote       # seed: missing
def f(i):         # seed: def f():
    return i      # seed: pass

# Antipattern: no parallelism due to calling ray.get inside of the loop.
returns = []
for i in range(100):
    returns.append(ray.get(f.remote(i)))
assert returns == list(range(100))  # added

# Better approach: parallelism because the tasks are spawned in parallel.
refs = []
for i in range(100):
    refs.append(f.remote(i))

returns = ray.get(refs)
assert returns == list(range(100))  # added
print("returns:", returns[:5])
