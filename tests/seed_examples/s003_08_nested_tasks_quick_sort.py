"""Seed 003 "Pattern: Using Nested Tasks for Nested Parallelism" (quick sort).

The seed only defines the functions; a driver is added that sorts 1,000,000 numbers (three
levels of nested tasks above the 200000 threshold, more blocked parents than the node's 2 CPUs)
and checks the result.
"""

import time

import quanta as ray
from numpy import random

ray.init(num_cpus=2)  # added: the seed does not init

def partition(collection):
    pivot = collection.pop()
    greater, lesser = [], []
    for element in collection:
        if element > pivot:
            greater.append(element)
        else:
            lesser.append(element)
    return lesser, pivot, greater
@ray.remote
def quick_sort_distributed(collection):
    # Use a threshold to avoid over-parallelizing
    if len(collection) <= 200000:
        return sorted(collection)
    else:
        lesser, pivot, greater = partition(collection)
        lesser = quick_sort_distributed.remote(lesser)
        greater = quick_sort_distributed.remote(greater)
        return ray.get(lesser) + [pivot] + ray.get(greater)


# added driver
unsorted = random.randint(1000000, size=1_000_000).tolist()
start = time.time()
result = ray.get(quick_sort_distributed.remote(unsorted))
assert result == sorted(unsorted)
print(f"sorted {len(result)} numbers in {time.time() - start:.2f} s")
