"""Seed 001 "Pattern: Map and Reduce" -- the map half: single-threaded map, then Ray parallel map
(a lambda passed as a task argument)."""
# ruff: noqa: E731

import quanta as ray

ray.init(num_cpus=2)

# Single-threaded map:
items = list(range(100))
map_func = lambda i : i*2
output = [map_func(i) for i in items]
expected = output  # added


# Ray parallel map:
@ray.remote
def map(obj, f):
    return f(obj)

items = list(range(100))
map_func = lambda i : i*2
output = ray.get([map.remote(i, map_func) for i in items])

assert output == expected == [2 * i for i in range(100)]
print("parallel map:", output[:5])
