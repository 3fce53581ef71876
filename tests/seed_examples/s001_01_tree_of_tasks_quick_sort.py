"""Seed 001 "Pattern: Tree of Tasks" (distributed quick sort with nested tasks).

Shrunk: the seed sorts 4,000,000 numbers; this sorts 1,000,000 (still three levels of nested
tasks above the 200000 "magic number", more blocked parents than the node's 2 CPUs).
``quick_sort`` (the sequential version the seed calls) is not defined by the seed: defined here.
A check of the result is added.
"""

import quanta as ray

ray.init()


def partition(collection):
    # Use the last element as the first pivot
    pivot = collection.pop()
    greater, lesser = [], []
    for element in collection:
        if element > pivot:
            greater.append(element)
        else:
            lesser.append(element)
    return lesser, pivot, greater


def quick_sort(collection):  # assumed by the seed: the sequential version
    return sorted(collection)


@ray.remote
def quick_sort_distributed(collection):
    # Tiny tasks are an antipattern.
    # Thus, in our example we have a "magic number" to
    # toggle when distributed recursion should be used vs
    # when the sorting should be done in place. The rule
    # of thumb is that the duration of an individual task
    # should be at least 1 second.
    if len(collection) <= 200000:  # magic number
        return sorted(collection)
    else:
        lesser, pivot, greater = partition(collection)
        lesser = quick_sort_distributed.remote(lesser)
        greater = quick_sort_distributed.remote(greater)
        return ray.get(lesser) + [pivot] + ray.get(greater)


if __name__ == "__main__":
    import time

    from numpy import random
    unsorted = random.randint(1000000, size=(1000000)).tolist()  # shrunk from 4000000
    s = time.time()
    quick_sort(unsorted)
    print("Sequential execution: " + str(time.time() - s))
    s = time.time()
    result = ray.get(quick_sort_distributed.remote(unsorted))  # seed: result not kept
    print("Distributed execution: " + str(time.time() - s))

    # added check
    assert result == sorted(unsorted)
    print("sorted", len(unsorted), "numbers")
