"""Seed 001 "Antipattern: Too fine-grained tasks" -- the antipattern and the batching fix.

Shrunk: the antipattern (one blocking ``ray.get`` per number) runs over 2000 numbers instead of
10000 to stay fast; the batching version keeps 10000.
"""

import quanta as ray

ray.init(num_cpus=2)

# Antipattern:
@ray.remote
def double(number):
    return number * 2

numbers = list(range(2000))  # shrunk from 10000

doubled_numbers = []
for i in numbers:
    doubled_numbers.append(ray.get(double.remote(i)))
assert doubled_numbers == [2 * n for n in numbers]  # added


# Better approach: Use batching.
@ray.remote
def double_list(list_of_numbers):
    return [number * 2 for number in list_of_numbers]

numbers = list(range(10000))
doubled_list_refs = []
BATCH_SIZE = 100
for i in range(0, len(numbers), BATCH_SIZE):
    batch = numbers[i : i + BATCH_SIZE]
    doubled_list_refs.append(double_list.remote(batch))

doubled_numbers = []
for ref in doubled_list_refs:
    doubled_numbers.extend(ray.get(ref))

assert doubled_numbers == [2 * n for n in numbers]  # added
print("batched:", len(doubled_list_refs), "tasks,", len(doubled_numbers), "numbers")
