"""Seed 000 "Pipelines: stage tasks with object refs".

The seed's stage bodies are ``...``; they are filled in minimally so that the result can be
checked, and ``uris`` (assumed by the seed) is defined. The pipeline line is verbatim.
"""

import quanta as ray

ray.init(num_cpus=2)

uris = [f"s3://bucket/part-{i:03d}.csv" for i in range(20)]  # assumed by the seed


@ray.remote
def load(uri):
    return uri.encode()  # seed: ...


@ray.remote
def transform(data):
    return data.upper()  # seed: ...


@ray.remote
def score(data):
    return len(data)  # seed: ...


results = [score.remote(transform.remote(load.remote(u))) for u in uris]
ray.get(results)

# check: each stage received the previous stage's value, not its ObjectRef
assert ray.get(results) == [len(u) for u in uris], ray.get(results)
print("pipeline scores:", ray.get(results)[:3])
