"""Seed 004 "Resource model" (prose only): nodes advertise CPU, GPU, memory and custom
resources; tasks request them with num_cpus, num_gpus, memory and resources={...}; resources
are logical: they reserve scheduling slots, they do not pin cores."""

import time

import quanta as ray

ray.init(num_cpus=2, resources={"special_hardware": 1})

total = ray.cluster_resources()
assert total["CPU"] == 2 and total["special_hardware"] == 1, total


@ray.remote(num_cpus=2)
def uses_two_cpus():
    return "ran with num_cpus=2"


@ray.remote(resources={"special_hardware": 1}, num_cpus=0.5, memory=100 * 1024 * 1024)
def on_special_hardware(i):
    start = time.monotonic()
    time.sleep(0.3)
    return start, time.monotonic()


assert ray.get(uses_two_cpus.remote()) == "ran with num_cpus=2"

# only one unit of "special_hardware": the two tasks cannot overlap
(s1, e1), (s2, e2) = ray.get([on_special_hardware.remote(i) for i in range(2)])
assert e1 <= s2 + 0.01 or e2 <= s1 + 0.01, ((s1, e1), (s2, e2))
print("custom resource serialized the tasks")
