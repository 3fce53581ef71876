"""Starting a node daemon and waiting until it is ready: for ``init()`` (a node owned by the
driver) and for ``quanta start --head`` (a node of its own, detached from the shell)."""

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


def _daemon_cmd(session_dir: str, *, num_cpus: float, num_gpus: float, memory: int,
                object_store_memory: int, resources: dict[str, float]) -> list[str]:
    return [
        sys.executable, "-m", "quanta._private.node.daemon",
        "--session-dir", session_dir,
        "--num-cpus", repr(float(num_cpus)),
        "--num-gpus", repr(float(num_gpus)),
        "--memory", str(int(memory)),
        "--object-store-memory", str(int(object_store_memory)),
        "--resources", json.dumps(resources),
        "--cleanup-session",
    ]


def _launch(cmd: list[str], timeout: float, log_path: str | None = None,
            **popen: Any) -> tuple[subprocess.Popen, dict[str, Any]]:
    """Run the daemon ``cmd`` with a ready pipe; return it and its node info once it listens."""
    r, w = os.pipe()
    proc = subprocess.Popen([*cmd, "--ready-fd", str(w)], pass_fds=(w,),
                            start_new_session=True, stdin=subprocess.DEVNULL, **popen)
    os.close(w)
    where = f"see {log_path}" if log_path else "see its output above"
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                proc.kill()
                proc.wait(5)
                raise exc.RaySystemStartupError(
                    f"the node daemon did not start within {timeout} s ({where})")
            chunk = os.read(r, 65536)
            if not chunk:
                code = proc.wait(5)
                raise exc.RaySystemStartupError(
                    f"the node daemon exited during start-up with code {code} ({where})")
            data += chunk
    finally:
        os.close(r)
    return proc, json.loads(data)


def start_local_node(*, num_cpus: float, num_gpus: float, memory: int,
                     object_store_memory: int, resources: dict[str, float],
                     timeout: float = 30.0) -> tuple[subprocess.Popen, dict[str, Any]]:
    """Start a daemon owned by this process; return it and its node info once it listens.

    The daemon ends when this driver's connection closes or this process dies."""
    session_dir = tempfile.mkdtemp(prefix="quanta-session-")
    cmd = _daemon_cmd(session_dir, num_cpus=num_cpus, num_gpus=num_gpus, memory=memory,
                      object_store_memory=object_store_memory, resources=resources)
    return _launch([*cmd, "--parent-death"], timeout)


def start_head_node(*, num_cpus: float, num_gpus: float, memory: int,
                    object_store_memory: int, resources: dict[str, float], node_ip: str,
                    control_port: int | None = None, head_address: str | None = None,
                    token: str | None = None, storage: str | None = None,
                    node_port: int | None = None, timeout: float = 30.0,
                    tls: tuple[str, str, str] | bool | None = None
                    ) -> tuple[subprocess.Popen, dict[str, Any], str]:
    """Start a daemon that belongs to no driver (``quanta start --head`` with
    ``control_port``, the gRPC port of the control store; or ``quanta start --address``
    with ``head_address`` and ``token``, a member node that joins that head).

    It runs in a session of its own, with no parent-death signal and no owner: it lives until
    ``quanta stop`` (the ``shutdown`` call) or a signal. Its output (and its workers') goes to
    ``<session>/logs/daemon.log``. Returns the process, the node info and the log path; on a
    failed start the session directory is removed and RaySystemStartupError names the log's
    last lines. ``tls``: the node's (cert, key, CA) files for TLS (``tls.py``); None: those of
    ``$QUANTA_TLS_CERT``/``KEY``/``CA`` (or Ray's variables) when set; False: none."""
    import shutil

    session_dir = tempfile.mkdtemp(prefix="quanta-session-")
    log_dir = os.path.join(session_dir, "logs")
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    os.chmod(log_dir, 0o700)  # whatever the umask: task output may hold secrets
    log_path = os.path.join(log_dir, "daemon.log")
    os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(log_path, 0o600)
    cmd = _daemon_cmd(session_dir, num_cpus=num_cpus, num_gpus=num_gpus, memory=memory,
                      object_store_memory=object_store_memory, resources=resources)
    cmd += ["--node-ip", node_ip]
    if control_port is not None:
        cmd += ["--control-port", str(int(control_port))]
    if head_address:
        cmd += ["--head-address", head_address]
    if storage:
        cmd += ["--storage", storage]
    if node_port is not None:
        cmd += ["--tcp-port", str(int(node_port))]
    if tls is None:
        from quanta._private import tls as _tls

        config = _tls.from_env()
        tls = config.paths() if config is not None else False
    if tls:
        cmd += ["--tls-cert", tls[0], "--tls-key", tls[1], "--tls-ca", tls[2]]
    env = dict(os.environ)
    if token:  # by environment, not argv: other users can read a process's arguments
        env["QUANTA_CLUSTER_TOKEN"] = token
    # Opened for reading too: a daemon that fails may delete its session dir, log included.
    with open(log_path, "a+b") as log:
        try:
            proc, node = _launch(cmd, timeout, log_path, stdout=log, stderr=subprocess.STDOUT,
                                 close_fds=True, env=env)
        except exc.RaySystemStartupError as e:
            log.seek(0)
            tail = log.read()[-2000:].decode(errors="replace").strip()
            shutil.rmtree(session_dir, ignore_errors=True)
            shutil.rmtree(os.path.join("/dev/shm", "quanta-" + os.path.basename(session_dir)),
                          ignore_errors=True)
            raise exc.RaySystemStartupError(
                str(e).replace(f" (see {log_path})", "")
                + (f". Its output:\n{tail}" if tail else "")) from None
    return proc, node, log_path
