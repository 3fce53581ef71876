"""The open-file limit of Quanta's processes.

A node daemon holds a connection per worker, driver and peer node, and a driver one per actor
it calls, so the common soft default of 1024 descriptors is reached long before memory or CPUs
run out. As Ray does, a daemon and a driver raise their soft ``RLIMIT_NOFILE`` to the hard limit
at start-up (workers inherit the daemon's). What happens at the limit itself is transport's
business: a listener that cannot accept backs off and says so (``Reactor._pause_accepting``).
"""

from __future__ import annotations

try:
    import resource
except ImportError:  # not POSIX
    resource = None  # type: ignore[assignment]


def raise_soft_limit() -> tuple[int, int] | None:
    """Raise this process's soft open-file limit to its hard limit; return ``(soft, hard)``
    as they are now, or None where the platform has no such limit."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard
