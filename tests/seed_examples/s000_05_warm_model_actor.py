"""Seed 000 "Use actors for warm models" (``Predictor`` actor with ``num_gpus=1``).

The machine has no GPU: the node declares one (``ray.init(num_gpus=1)``; GPUs are logical
resources), so the seed's ``@ray.remote(num_gpus=1)`` class is kept verbatim. ``load_model`` and
``batches`` are assumed by the seed and defined here: the "model" doubles the sum of a batch and
counts its calls, and loading it takes 0.3 s.

Added checks: the model was loaded once and served every batch (the actor is warm); the actor
holds the node's only GPU (``ray.get_gpu_ids()`` is ``[0]`` inside it); a second ``Predictor``
cannot start until the first is killed (``ray.kill``) and its GPU released.
"""

import time

import quanta as ray

ray.init(num_cpus=2, num_gpus=1)  # the seed does not init; 1 logical GPU declared


class Model:  # assumed by the seed
    def __init__(self):
        time.sleep(0.3)  # the load cost the actor pays once
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return 2 * sum(batch)


def load_model():  # assumed by the seed
    return Model()


batches = [list(range(i, i + 4)) for i in range(0, 40, 4)]  # assumed by the seed: 10 batches


@ray.remote(num_gpus=1)
class Predictor:
    def __init__(self):
        self.model = load_model()

    def predict(self, batch):
        return self.model(batch)

    def model_calls(self):  # added
        return self.model.calls

    def gpu_ids(self):  # added
        return ray.get_gpu_ids()


predictor = Predictor.remote()
predictions = ray.get([predictor.predict.remote(b) for b in batches])

# added checks
assert predictions == [2 * sum(b) for b in batches], predictions
assert ray.get(predictor.model_calls.remote()) == len(batches)  # one model served all batches
print("predictions:", predictions[:3])
print("model calls:", ray.get(predictor.model_calls.remote()))
gpu_ids = ray.get(predictor.gpu_ids.remote())
assert [int(g) for g in gpu_ids] == [0], gpu_ids
print("predictor gpu ids: [0]")

# added: the only GPU is held by `predictor`, so a second Predictor waits for it
second = Predictor.remote()
pending = second.predict.remote(batches[0])
ready, _ = ray.wait([pending], timeout=1)
assert not ready, "a second num_gpus=1 actor ran while the only GPU was held"
ray.kill(predictor)
assert ray.get(pending, timeout=30) == 2 * sum(batches[0])
print("second Predictor ran after the first was killed")

ray.shutdown()
