"""``wait`` on long lists (more than 32 refs) takes the rescanning path; same semantics."""

import time

import pytest
import quanta as ray


@ray.remote
def nap(seconds):
    time.sleep(seconds)
    return seconds


@pytest.mark.timeout(60)
def test_wait_many_refs_in_input_order_and_timeout(quanta_node):
    quick = [nap.remote(0) for _ in range(40)]
    slow = [nap.options(num_cpus=0.01).remote(30) for _ in range(2)]
    refs = slow[:1] + quick + slow[1:]
    ready, rest = ray.wait(refs, num_returns=40, timeout=30)
    assert ready == quick  # ready refs keep the order of the input
    assert rest == slow
    start = time.monotonic()
    ready, rest = ray.wait(refs, num_returns=42, timeout=0.5)
    assert 0.4 < time.monotonic() - start < 5
    assert ready == quick and rest == slow
    for ref in slow:
        ray.cancel(ref, force=True)


@pytest.mark.timeout(60)
def test_wait_loop_one_at_a_time_over_many(quanta_node):
    refs = [nap.remote(0.001) for _ in range(200)]
    seen = []
    while refs:
        ready, refs = ray.wait(refs, num_returns=1)
        seen.extend(ready)
    assert len(seen) == 200 and len(set(seen)) == 200
    assert ray.get(seen) == [0.001] * 200
