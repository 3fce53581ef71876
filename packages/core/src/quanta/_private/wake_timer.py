"""A re-armable one-shot timer a thread can sleep on: the reactor thread's alarm clock.

The reactor thread takes the lead back only when nobody has polled the connections for a
short grace period (see ``Reactor.run_forever``). Re-arming must be cheap and must not wake the
sleeper, so it is a Linux ``timerfd``: arming is one syscall, and the sleeper (blocked in
``read``) wakes only when the timer really expires. Python 3.13 exposes timerfd in :mod:`os`;
on older versions it is reached through ``ctypes``. Where neither exists (macOS),
:meth:`WakeTimer.create` returns None and the reactor thread simply polls all the time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_CLOCK_MONOTONIC = 1
_TFD_CLOEXEC = 0o2000000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class WakeTimer:
    """One timerfd: :meth:`arm` (any thread) and :meth:`wait` (one sleeping thread)."""

    GRACE = 0.001
    """Seconds the lead may stay free before the reactor thread takes it back."""

    def __init__(self, fd: int, settime) -> None:
        self._fd = fd
        self._settime = settime
        self._closed = False

    @classmethod
    def create(cls) -> WakeTimer | None:
        if not sys.platform.startswith("linux"):
            return None
        if hasattr(os, "timerfd_create"):
            fd = os.timerfd_create(_CLOCK_MONOTONIC, flags=os.TFD_CLOEXEC)

            def settime(seconds: float) -> None:
                os.timerfd_settime_ns(fd, initial=max(1, int(seconds * 1e9)))

            return cls(fd, settime)
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            create, set_ = libc.timerfd_create, libc.timerfd_settime
        except (OSError, AttributeError):
            return None
        create.argtypes = [ctypes.c_int, ctypes.c_int]
        set_.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                         ctypes.c_void_p]
        fd = create(_CLOCK_MONOTONIC, _TFD_CLOEXEC)
        if fd < 0:
            return None
        def settime(seconds: float) -> None:
            ns = max(1, int(seconds * 1e9))  # 0 would disarm the timer
            spec = _Itimerspec()
            spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(ns, 1_000_000_000)
            set_(fd, 0, ctypes.byref(spec), None)

        return cls(fd, settime)

    def arm(self, seconds: float) -> None:
        """Expire ``seconds`` from now (replacing any earlier arming). No-op once closed."""
        if not self._closed:
            self._settime(seconds)

    def wait(self) -> None:
        """Sleep until the timer expires (returns at once if it already has)."""
        try:
            os.read(self._fd, 8)
        except InterruptedError:
            pass

    def close(self) -> None:
        """Mark closed; the descriptor itself is left to the garbage collector (``__del__``),
        so that a late :meth:`arm` from another thread can never hit a reused number."""
        self._closed = True

    def __del__(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
