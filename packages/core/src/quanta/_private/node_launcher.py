"""Starting a node daemon for ``init()`` and waiting until it is ready."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from typing import Any

from quanta import exceptions as exc


def start_local_node(*, num_cpus: float, num_gpus: float, memory: int,
                     object_store_memory: int, resources: dict[str, float],
                     timeout: float = 30.0) -> tuple[subprocess.Popen, dict[str, Any]]:
    """Start a daemon owned by this process; return it and its node info once it listens."""
    session_dir = tempfile.mkdtemp(prefix="quanta-session-")
    r, w = os.pipe()
    cmd = [
        sys.executable, "-m", "quanta._private.node.daemon",
        "--session-dir", session_dir,
        "--num-cpus", repr(float(num_cpus)),
        "--num-gpus", repr(float(num_gpus)),
        "--memory", str(int(memory)),
        "--object-store-memory", str(int(object_store_memory)),
        "--resources", json.dumps(resources),
        "--ready-fd", str(w),
        "--cleanup-session",
        "--parent-death",
    ]
    proc = subprocess.Popen(cmd, pass_fds=(w,), start_new_session=True,
                            stdin=subprocess.DEVNULL)
    os.close(w)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                proc.kill()
                raise exc.RaySystemStartupError(
                    f"the node daemon did not start within {timeout} s")
            chunk = os.read(r, 65536)
            if not chunk:
                code = proc.wait(5)
                raise exc.RaySystemStartupError(
                    f"the node daemon exited during start-up with code {code}; see its "
                    "output above")
            data += chunk
    finally:
        os.close(r)
    return proc, json.loads(data)
