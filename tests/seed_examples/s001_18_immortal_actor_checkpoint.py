"""Seed 001 "Pattern: Fault Tolerance with Actor Checkpointing", first example: an
``ImmortalActor`` with ``max_restarts=-1, max_task_retries=-1`` that reloads its state from a
checkpoint file when it is restarted.

Filled in: the seed's ``process`` body is ``....``; here it counts calls in ``self.state``,
writes the checkpoint after each call, and the 4th call kills the actor's process once
(``os._exit(1)``, before that call's checkpoint is written). Ray then restarts the actor
(``max_restarts``), whose ``__init__`` reloads the checkpoint (count 3), and retries the
interrupted call on the new instance (``max_task_retries``), so ``ray.get`` of every call
succeeds: counts 1..5, the 4th and 5th from a new process.

Changed: ``MyState()`` (assumed by the seed) is a dict here: ``pickle`` in the actor's process
cannot dump an instance of a class defined in the driver's script. ``pickle.load(open(path))``
opens the file in text mode, which fails; opened with ``"rb"``. The checkpoint lives in a
temporary directory instead of /tmp/checkpoint.pkl, so that runs do not share it.
"""

import os
import pickle
import shutil
import tempfile

import quanta as ray

ray.init(num_cpus=2)  # added: the seed does not init

CHECKPOINT_DIR = tempfile.mkdtemp()                            # added
CHECKPOINT = os.path.join(CHECKPOINT_DIR, "checkpoint.pkl")    # seed: "/tmp/checkpoint.pkl"
CRASHED = os.path.join(CHECKPOINT_DIR, "crashed")              # added: crash only once


def MyState():  # assumed by the seed
    return {"count": 0}


# max_restarts tells Ray to restart the actor infinite times
# max_task_retries tells Ray to transparently retries actor call when you
# call ray.get(actor.process.remote())
@ray.remote(max_restarts=-1, max_task_retries=-1)
class ImmortalActor:
    def __init__(self):
        if os.path.exists(CHECKPOINT):
            self.state = pickle.load(open(CHECKPOINT, "rb"))  # seed: open(path), text mode
        else:
            self.state = MyState()

    def process(self):
        # ....
        self.state["count"] += 1
        if self.state["count"] == 4 and not os.path.exists(CRASHED):  # crash once, mid-call
            open(CRASHED, "w").close()
            os._exit(1)
        with open(CHECKPOINT, "wb") as f:
            pickle.dump(self.state, f)
        return self.state["count"], os.getpid()


actor = ImmortalActor.remote()
counts, pids = zip(*[ray.get(actor.process.remote()) for _ in range(5)])
assert counts == (1, 2, 3, 4, 5), counts
assert len(set(pids[:3])) == 1 and len(set(pids[3:])) == 1 and pids[2] != pids[3], pids
assert os.path.exists(CRASHED)
print("ImmortalActor counts:", list(counts))
print("restarted once, state restored from the checkpoint")

shutil.rmtree(CHECKPOINT_DIR)
ray.shutdown()
