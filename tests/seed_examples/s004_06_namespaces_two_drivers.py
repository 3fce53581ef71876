"""Seed 004 "Namespaces" across jobs: "Two jobs in the same namespace can discover each other's
named actors; jobs in different namespaces cannot." The seed's only code is
``ray.init(namespace="serving")``; here three drivers (jobs) share one node:

* the node is started from the shell, ``quanta start --head`` (run as ``python -m
  quanta.cli``, the ``quanta`` command, so that no PATH is needed), and stopped at the end
  with ``quanta stop``;
* job 1 (this script) connects with ``ray.init(address="auto", namespace="serving")`` and
  creates the actor named "model";
* job 2, a second driver (``sys.executable -c ...``) in namespace "serving", finds "model" by
  name and calls it (it never defined the class);
* job 3, a driver in namespace "staging", cannot see "model", creates its own detached actor
  of that name and exits; job 1 then finds it with ``ray.get_actor("model",
  namespace="staging")``: the detached actor outlived its job.

``Model`` is added (the seed defines no actor). The same checks within one driver are
``s004_05_named_actors_namespaces.py``.
"""

import subprocess
import sys
import textwrap

import quanta as ray

QUANTA = [sys.executable, "-m", "quanta.cli"]  # the `quanta` command


def run_driver(namespace, code):  # added: another job, a driver of its own
    code = (f"import quanta as ray\nray.init(address='auto', namespace={namespace!r})\n"
            + textwrap.dedent(code) + "\nray.shutdown()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"driver in {namespace!r} failed:\n{proc.stdout}{proc.stderr}"
    print(proc.stdout, end="")


subprocess.run(QUANTA + ["start", "--head", "--num-cpus", "2", "--port", "0"], check=True,
               capture_output=True, text=True, timeout=60)
try:
    ray.init(address="auto", namespace="serving")
    assert ray.get_runtime_context().namespace == "serving"

    @ray.remote
    class Model:
        def __init__(self, version):
            self.version = version

        def get_version(self):
            return self.version

    model = Model.options(name="model").remote("v1")
    assert ray.get(model.get_version.remote()) == "v1"
    print("job 1 (serving): created model v1")

    # job 2: same namespace, sees job 1's named actor
    run_driver("serving", """
        model = ray.get_actor("model")
        print("job 2 (serving): found model", ray.get(model.get_version.remote()))
    """)

    # job 3: another namespace, does not see it; its own "model" is detached
    run_driver("staging", """
        try:
            ray.get_actor("model")
        except ValueError:
            print("job 3 (staging): no actor named model")
        else:
            raise AssertionError("found serving's named actor from namespace staging")

        @ray.remote
        class Model:
            def get_version(self):
                return "v2"

        model = Model.options(name="model", lifetime="detached").remote()
        assert ray.get(model.get_version.remote()) == "v2"
        print("job 3 (staging): created detached model v2")
    """)

    # job 1 again: its own "model" is unchanged, and job 3's detached actor is still there
    assert ray.get(ray.get_actor("model").get_version.remote()) == "v1"
    staging_model = ray.get_actor("model", namespace="staging")
    assert ray.get(staging_model.get_version.remote()) == "v2"
    print("job 1 (serving): model v1; staging's detached model v2 outlived job 3")
    ray.kill(staging_model)
finally:
    ray.shutdown()  # a driver that connected only disconnects
    stop = subprocess.run(QUANTA + ["stop"], capture_output=True, text=True, timeout=60)
assert stop.returncode == 0, stop.stdout + stop.stderr
print("quanta stop: ok")
