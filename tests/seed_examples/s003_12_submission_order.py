"""Seed 003 "Anti-pattern: Processing Results in Submission Order" and the ``ray.wait`` fix.
``f`` (tasks of varying length, shrunk to at most 50 ms) and ``process`` are assumed by the
seed and defined here."""

import random
import time

import quanta as ray

ray.init(num_cpus=2)


@ray.remote
def f(i):  # assumed by the seed
    time.sleep(random.random() / 20)
    return i


processed = []


def process(result):  # assumed by the seed
    processed.append(result)


refs = [f.remote(i) for i in range(100)]
for ref in refs:
    result = ray.get(ref) # Blocks waiting for each in order
    process(result)
assert processed == list(range(100))  # added

processed.clear()  # added
refs = [f.remote(i) for i in range(100)]
unfinished = refs
while unfinished:
    finished, unfinished = ray.wait(unfinished, num_returns=1)
    result = ray.get(finished[0])
    process(result)

assert sorted(processed) == list(range(100))  # added
print("processed", len(processed), "results in completion order")
