"""Seed 003 "Fault Tolerance": ``max_retries`` and ``retry_exceptions``.

The seed's body is ``# ...``; here the task raises ValueError on its first two attempts (counted
in a file, since each attempt may run in another worker) and succeeds on the third. A task
raising an exception not listed in ``retry_exceptions`` is not retried.
"""

import os
import tempfile

import quanta as ray

ray.init(num_cpus=2)

attempts_file = os.path.join(tempfile.mkdtemp(), "attempts")  # added


def count_attempt():  # added
    with open(attempts_file, "a") as fh:
        fh.write("x")
    with open(attempts_file) as fh:
        return len(fh.read())


@ray.remote(max_retries=3, retry_exceptions=[ValueError])
def my_task():
    # ...
    if count_attempt() < 3:
        raise ValueError("transient failure")
    return "succeeded"


assert ray.get(my_task.remote()) == "succeeded"
assert count_attempt() == 4  # three attempts, plus this call
print("my_task succeeded after 2 retries")

os.remove(attempts_file)


@ray.remote(max_retries=3, retry_exceptions=[ValueError])
def other_error():  # added: not a listed exception -> no retry
    count_attempt()
    raise KeyError("not retried")


try:
    ray.get(other_error.remote())
except KeyError:
    assert count_attempt() == 2  # one attempt, plus this call
    print("KeyError was not retried")
else:
    raise AssertionError("expected KeyError")
