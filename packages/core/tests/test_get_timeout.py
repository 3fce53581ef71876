"""``timeout`` of get() (one ref or a list) and wait(): None or a non-negative number of
seconds; anything else raises TypeError (not a number) or ValueError (negative, NaN) naming
the argument, the same way for every form."""

from __future__ import annotations

import time

import pytest
import quanta as ray
from quanta import exceptions as qexc

pytestmark = pytest.mark.timeout(60)

BAD = [(-1, ValueError), ("5", TypeError), (float("nan"), ValueError), (True, TypeError),
       (-0.5, ValueError), ([1], TypeError)]


@pytest.mark.parametrize(("bad", "error"), BAD)
def test_bad_timeout_is_rejected_for_every_form(quanta_node, bad, error):
    ref = ray.put(1)
    calls = {"get one": lambda: ray.get(ref, timeout=bad),
             "get list": lambda: ray.get([ref], timeout=bad),
             "wait": lambda: ray.wait([ref], timeout=bad)}
    for name, call in calls.items():
        fn = name.split()[0]
        with pytest.raises(error, match=rf"{fn}\(timeout=\.\.\.\) must be None or a "
                                        r"non-negative number of seconds"):
            call()


def test_good_timeouts(quanta_node):
    @ray.remote
    def slow():
        time.sleep(30)

    ref = ray.put("ready")
    for t in (0, 0.5, None, 2, float("inf")):
        assert ray.get(ref, timeout=t) == "ready"
        assert ray.get([ref], timeout=t) == ["ready"]
        assert ray.wait([ref], timeout=t) == ([ref], [])
    pending = slow.remote()
    for t in (0, 0.5):
        start = time.monotonic()
        with pytest.raises(qexc.GetTimeoutError):
            ray.get(pending, timeout=t)
        with pytest.raises(qexc.GetTimeoutError):
            ray.get([pending], timeout=t)
        assert ray.wait([pending], timeout=t) == ([], [pending])
        assert time.monotonic() - start < 3 * t + 2
    ray.cancel(pending, force=True)
