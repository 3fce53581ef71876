"""Seed 003 "Anti-pattern: Calling ray.get() in a Loop" and its solution. ``f`` is assumed by
the seed and defined here."""

import quanta as ray

ray.init(num_cpus=2)


@ray.remote
def f(i):  # assumed by the seed
    return i * i


# No parallelism - waits for each task sequentially
sequential_returns = []
for i in range(100):
    sequential_returns.append(ray.get(f.remote(i)))

# Better: all tasks execute in parallel
refs = []
for i in range(100):
    refs.append(f.remote(i))
parallel_returns = ray.get(refs)

assert sequential_returns == parallel_returns == [i * i for i in range(100)]  # added
print("parallel_returns:", parallel_returns[:5])
