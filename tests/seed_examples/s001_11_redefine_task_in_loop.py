"""Seed 001 "Antipattern: Redefining task or actor in loop" -- antipattern and fix."""

import quanta as ray

ray.init(num_cpus=2)

# Antipattern:
outputs = []
for i in range(10):
    @ray.remote
    def exp(i, j):
        return i**j
    step_i_out = ray.get([exp.remote(i, j) for j in range(10)])
    outputs.append(step_i_out)
anti_outputs = outputs  # added


# Better approach:
@ray.remote
def exp(i, j):
    return i**j

outputs = []
for i in range(10):
    step_i_out = ray.get([exp.remote(i, j) for j in range(10)])
    outputs.append(step_i_out)

expected = [[i**j for j in range(10)] for i in range(10)]  # added
assert anti_outputs == expected, anti_outputs
assert outputs == expected, outputs
print("outputs[2]:", outputs[2])
