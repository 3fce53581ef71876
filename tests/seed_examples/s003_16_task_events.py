"""Seed 003 "Task Events": ``enable_task_events=False`` is accepted and the task runs.
The seed's body is ``# ...``; here it returns a value."""

import quanta as ray

ray.init(num_cpus=2)


@ray.remote(enable_task_events=False)
def my_task():
    # ...
    return "ran"


assert ray.get(my_task.remote()) == "ran"
assert ray.get(my_task.options(enable_task_events=True).remote()) == "ran"
print("my_task:", ray.get(my_task.remote()))
