"""Helpers the test suites of every package share (core, util-pool, util-queue, plugins):
polling for what no API can wait on, and watching processes through Linux's ``/proc``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` seconds pass; return its last value.

    Only for things no API can wait on (asynchronous freeing, processes exiting)."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return bool(pred())
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # state is the field after the parenthesised command name
    state = stat.rsplit(")", 1)[1].split()[0]
    if state not in ("Z", "X"):
        return True
    # A killed multi-threaded process shows its main thread as a zombie while the other
    # threads are still exiting and its sockets are still open: dead once they are gone.
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except (FileNotFoundError, ProcessLookupError):
        return False


def descendants(pid: int) -> set[int]:
    """Every live process under ``pid`` (children, grandchildren, ...)."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except (FileNotFoundError, ProcessLookupError):  # it exited meanwhile
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            for k in kids:
                if k not in out:
                    out.add(k)
                    todo.append(k)
    return out
