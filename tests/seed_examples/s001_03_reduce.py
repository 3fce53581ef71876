"""Seed 001 "Pattern: Map and Reduce" -- the reduce half: single-threaded reduce, then Ray
parallel reduce (simple reduce and tree reduce, refs passed as ``*args``)."""
# ruff: noqa: E731

import numpy as np
import quanta as ray

ray.init(num_cpus=2)

# Single-threaded reduce:
items = list(range(100))
map_func = lambda i : i*2
output = sum([map_func(i) for i in items])
assert output == 9900  # added


# Ray parallel reduce:
@ray.remote
def map(obj, f):
    return f(obj)

@ray.remote
def sum_results(*elements):
    return np.sum(elements)

items = list(range(100))
map_func = lambda i : i*2
remote_elements = [map.remote(i, map_func) for i in items]

# simple reduce
remote_final_sum = sum_results.remote(*remote_elements)
result = ray.get(remote_final_sum)
assert result == output, result  # added
print("simple reduce:", result)

# tree reduce
intermediate_results = [sum_results.remote(
    *remote_elements[i * 20: (i + 1) * 20]) for i in range(5)]
remote_final_sum = sum_results.remote(*intermediate_results)
result = ray.get(remote_final_sum)
assert result == output, result  # added
print("tree reduce:", result)
