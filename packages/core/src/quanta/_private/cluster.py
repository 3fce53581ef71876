"""Nodes started from the shell (``quanta start --head`` / ``stop`` / ``status``) and how
``init(address=...)`` finds and reaches a running node.

Design
------
``quanta start --head`` starts a node daemon that belongs to no driver: a session of its own,
no parent-death signal, no primary driver (see ``node_launcher.start_head_node``). Drivers
that connect to it register as non-primary, so their leaving never ends it; only the
``shutdown`` call (``quanta stop``) or a signal does.

The running cluster is recorded in ``<tempdir>/quanta/current_cluster`` (``tempdir`` is
``tempfile.gettempdir()``, so ``$TMPDIR`` is honoured), like Ray's
``/tmp/ray/ray_current_cluster``: one JSON object with the daemon's Unix address, its TCP
address (with ``--port``), pid, node id, session and object-store directories. The record is
written under a lock file (two concurrent ``quanta start --head`` cannot both win) and
replaced atomically. A record is trusted only after the daemon answers at the recorded
address with the recorded node id; a daemon that is gone leaves a *stale* record, which
``quanta stop`` and the next ``quanta start --head`` clean up.

The commands talk to the daemon with :func:`rpc`: one blocking ``CALL``/``REPLY`` on a plain
socket, the same frames as the call plane (``transport.py``), with no reactor thread and no
``CoreWorker``. Frames are pickles: anyone who can connect to the daemon can run code as its
user, so ``--port`` must only be used on a trusted network (as with Ray).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from quanta._private import messages as m
from quanta._private.transport import frame, parse_address, recv_exact

RECORD_NAME = "current_cluster"
_HEADER = struct.Struct("<I")
_DAEMON_MODULE = b"quanta._private.node.daemon"


class ClusterError(RuntimeError):
    """A shell command cannot do what was asked (a cluster already runs, ...)."""


# --------------------------------------------------------------------------------------
# the record file
# --------------------------------------------------------------------------------------
def record_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "quanta")


def record_path() -> str:
    """Where the running cluster is recorded: ``<tempdir>/quanta/current_cluster``."""
    return os.path.join(record_dir(), RECORD_NAME)


def read_record() -> dict[str, Any] | None:
    """The recorded cluster, or None when there is no record (or it is unreadable)."""
    try:
        with open(record_path()) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("address"), str) or not isinstance(
            rec.get("pid"), int):
        return None
    return rec


def write_record(rec: dict[str, Any]) -> None:
    os.makedirs(record_dir(), exist_ok=True)
    path = record_path()
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def remove_record(pid: int | None = None) -> None:
    """Remove the record (only if it still names ``pid``, when given)."""
    if pid is not None:
        rec = read_record()
        if rec is not None and rec.get("pid") != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path())


@contextlib.contextmanager
def record_lock() -> Iterator[None]:
    """Serialize commands that check and change the record (``start``, ``stop``)."""
    import fcntl

    os.makedirs(record_dir(), exist_ok=True)
    fd = os.open(os.path.join(record_dir(), RECORD_NAME + ".lock"), os.O_RDWR | os.O_CREAT,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------
# talking to a daemon
# --------------------------------------------------------------------------------------
def rpc(address: str, method: str, *args: Any, timeout: float = 5.0) -> Any:
    """Call the daemon's ``rpc_<method>`` at ``address`` and return its result.

    Raises OSError (ConnectionError, TimeoutError, ...) when the daemon cannot be reached or
    does not answer within ``timeout``, and whatever the daemon's method raised."""
    family, sockaddr = parse_address(address)
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
        sock.sendall(frame((m.CALL, 1, method, args)))
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                head = recv_exact(sock, _HEADER.size)
                msg = pickle.loads(recv_exact(sock, _HEADER.unpack(head)[0]))
            except EOFError:
                raise ConnectionError("the node daemon closed the connection") from None
            if msg[0] == m.REPLY and msg[1] == 1:
                if msg[2]:
                    return msg[3]
                raise msg[3]


def probe(rec: dict[str, Any], timeout: float = 3.0) -> dict[str, Any] | None:
    """The node info of the recorded daemon if it answers at its address as the recorded
    node; None otherwise."""
    try:
        nodes = rpc(rec["address"], "nodes", timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return None
    for node in nodes:
        if rec.get("node_id") in (None, node.get("NodeID")):
            return node
    return None


def _proc_state(pid: int) -> tuple[bytes, str] | None:
    """``(cmdline, state)`` of a live process, None when gone (or unknowable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return cmdline, state


def is_daemon_process(pid: int, session_dir: str) -> bool:
    """True while ``pid`` is the node daemon of ``session_dir`` (not a zombie, not a reused
    pid). Without ``/proc`` (not Linux): whether the pid exists."""
    if pid <= 0:
        return False
    if not os.path.isdir("/proc/self"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    st = _proc_state(pid)
    if st is None or st[1] in ("Z", "X"):
        return False
    return _DAEMON_MODULE in st[0] and os.fsencode(session_dir) in st[0]


def session_pids(session_dir: str) -> list[int]:
    """Live processes of a session: the daemon, its zygote and workers (forked, so their
    command line is the daemon's and names the session directory). Linux only."""
    needle = os.fsencode(session_dir)
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        st = _proc_state(int(entry))
        if st is not None and st[1] not in ("Z", "X") and _DAEMON_MODULE in st[0] and \
                needle in st[0]:
            found.append(int(entry))
    return found


def cluster_state(rec: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """``("running", node)``, ``("unresponsive", None)`` (the daemon process lives but does
    not answer) or ``("dead", None)``."""
    node = probe(rec)
    if node is not None:
        return "running", node
    if is_daemon_process(rec["pid"], rec.get("session_dir", "")):
        return "unresponsive", None
    return "dead", None


def _wait(pred: Any, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return bool(pred())
        time.sleep(interval)
    return True


def _remove_files(rec: dict[str, Any]) -> None:
    for key in ("object_store_dir", "session_dir"):
        path = rec.get(key)
        if path and os.path.basename(path).startswith(("quanta-", "quanta-session-")):
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------
# what init(address=...) connects to
# --------------------------------------------------------------------------------------
_ADDRESS_FORMS = ("'auto', 'local', 'HOST:PORT', 'tcp://HOST:PORT' or "
                  "'unix:///path/to/node.sock'")


def resolve_address(address: str) -> dict[str, Any]:
    """The node info of the running node daemon ``address`` names, reachable from here
    through its Unix socket. Raises ConnectionError when there is none, ValueError for an
    address of an unknown form."""
    if address == "auto":
        path = record_path()
        rec = read_record()
        if rec is None:
            member = _local_member()
            if member is not None:  # this machine runs a member node of a cluster: its driver
                return member
            raise ConnectionError(
                f"init(address='auto'): no running Quanta cluster found: {path} does not "
                "exist (or is unreadable). Start one with `quanta start --head`, or call "
                "init() with no address to start a local node.")
        node = probe(rec)
        if node is None:
            raise ConnectionError(
                f"init(address='auto'): the Quanta cluster recorded in {path} (daemon pid "
                f"{rec['pid']} at {rec['address']}) is not running or does not answer. "
                "Start one with `quanta start --head` (`quanta stop` clears a stale record).")
        return node
    if "://" in address and not address.startswith(("unix://", "tcp://")):
        raise ValueError(
            f"init(address={address!r}): unsupported scheme (Ray Client's ray:// is not "
            f"supported); expected {_ADDRESS_FORMS}.")
    if address.startswith("unix://"):
        try:
            nodes = rpc(address, "nodes")
        except OSError as e:
            raise ConnectionError(
                f"init(address={address!r}): no Quanta node daemon answers there ({e}). "
                "Start one with `quanta start --head`.") from None
        return next((n for n in nodes if n.get("DaemonAddress") == address), nodes[0])
    tcp = address if address.startswith("tcp://") else "tcp://" + address
    host, sep, port = tcp[len("tcp://"):].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"init(address={address!r}): expected {_ADDRESS_FORMS}.")
    from quanta._private.control_client import ControlClient, TokenRejected

    try:
        with ControlClient(f"{host}:{port}", local_token(), timeout=5.0) as client:
            head = client.cluster_info().head
    except (TokenRejected, ConnectionError) as e:
        # a machine with a member node of that cluster (and no token of its own): its node
        member = _local_member(f"{host}:{port}")
        if member is not None:
            return member
        raise ConnectionError(f"init(address={address!r}): {e}") from None
    local = head.daemon_address
    if local.startswith("unix://") and os.path.isdir(head.session_dir):
        try:
            for n in rpc(local, "nodes"):
                if n.get("NodeID") == head.node_id:
                    return n
        except OSError:
            pass
    member = _local_member(f"{host}:{port}")
    if member is not None:
        return member
    raise ConnectionError(
        f"init(address={address!r}): the Quanta head at {host}:{port} runs on another "
        "machine and no node of its cluster runs on this one. A driver runs on a node of the "
        f"cluster: start one here with `quanta start --address {host}:{port}`, then call "
        "init() again.")


def _local_member(head_address: str | None = None) -> dict[str, Any] | None:
    """The node info of a running member node started on this machine (``quanta start
    --address``), of the cluster whose head is at ``head_address`` when given."""
    for rec in read_members():
        if head_address is not None and rec.get("head_address") != head_address:
            continue
        node = probe(rec)
        if node is not None:
            return node
    return None


def local_token() -> str | None:
    """The cluster token this process presents: ``$QUANTA_CLUSTER_TOKEN``, else the token of
    the head recorded on this machine (readable by its user only)."""
    from quanta._private import cluster_token

    token = os.environ.get(cluster_token.ENV_VAR)
    if token:
        return token
    rec = read_record()
    if rec is not None and rec.get("session_dir"):
        return cluster_token.read(rec["session_dir"])
    return None


# --------------------------------------------------------------------------------------
# start / stop
# --------------------------------------------------------------------------------------
def detect_node_ip() -> str:
    """This machine's address as other machines would see it (the interface of the default
    route, like Ray); 127.0.0.1 when there is none."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("8.8.8.8", 80))  # UDP: picks a route, sends nothing
        return s.getsockname()[0]
    with contextlib.suppress(OSError):
        ip = socket.gethostbyname(socket.gethostname())
        if ip:
            return ip
    return "127.0.0.1"


def start_head(*, num_cpus: float, num_gpus: float, memory: int, object_store_memory: int,
               resources: dict[str, float], node_ip: str, port: int,
               token: str | None = None, storage: str | None = None,
               node_port: int | None = None) -> tuple[Any, dict[str, Any], str | None]:
    """Start a head node daemon and record it. Returns ``(process, record, note)``; ``note``
    says what stale record was cleaned up, if any. Raises ClusterError when a cluster runs."""
    from quanta._private.node_launcher import start_head_node

    note = None
    with record_lock():
        rec = read_record()
        if rec is not None:
            state, _ = cluster_state(rec)
            if state != "dead":
                how = "" if state == "running" else " (its daemon does not answer)"
                raise ClusterError(
                    f"A Quanta cluster is already running on this machine{how}: daemon pid "
                    f"{rec['pid']} at {rec['address']}, recorded in {record_path()}. Stop it "
                    "with `quanta stop` first, or connect to it with "
                    "quanta.init(address=\"auto\").")
            _remove_files(rec)
            remove_record()
            note = (f"Removed the record of a cluster that is no longer running (daemon pid "
                    f"{rec['pid']}).")
        proc, node, log_path = start_head_node(
            num_cpus=num_cpus, num_gpus=num_gpus, memory=memory,
            object_store_memory=object_store_memory, resources=resources, node_ip=node_ip,
            control_port=port, token=token, storage=storage, node_port=node_port)
        rec = _node_record(proc, node, node_ip, log_path,
                           control_address=node.get("ControlAddress"),
                           node_address=node.get("NodeAddress"))
        try:
            write_record(rec)
        except OSError:
            stop_node_daemon(rec, force=True, timeout=0)
            raise
    return proc, rec, note


def members_dir() -> str:
    """Where member nodes started on this machine (``quanta start --address``) are recorded,
    one ``<pid>.json`` each."""
    return os.path.join(record_dir(), "members")


def read_members() -> list[dict[str, Any]]:
    out = []
    try:
        names = sorted(os.listdir(members_dir()))
    except OSError:
        return out
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(members_dir(), name)) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("pid"), int):
            out.append(rec)
    return out


def _member_path(pid: int) -> str:
    return os.path.join(members_dir(), f"{pid}.json")


def start_member(*, head_address: str, token: str | None, num_cpus: float, num_gpus: float,
                 memory: int, object_store_memory: int, resources: dict[str, float],
                 node_ip: str, node_port: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Start a node daemon that joins the head at ``head_address`` and record it. Raises
    ValueError without a token, RaySystemStartupError when the head refuses or is away."""
    from quanta._private.node_launcher import start_head_node

    token = token or local_token()
    if not token:
        raise ValueError(
            "quanta start --address: no cluster token. Pass --token-file PATH (the file "
            "<session>/cluster_token on the head's machine; the head prints its path at "
            "start) or set QUANTA_CLUSTER_TOKEN.")
    proc, node, log_path = start_head_node(
        num_cpus=num_cpus, num_gpus=num_gpus, memory=memory,
        object_store_memory=object_store_memory, resources=resources, node_ip=node_ip,
        head_address=head_address, token=token, node_port=node_port)
    rec = _node_record(proc, node, node_ip, log_path, head_address=head_address,
                       node_address=node.get("NodeAddress"))
    os.makedirs(members_dir(), exist_ok=True)
    path = _member_path(proc.pid)
    with open(path + ".tmp", "w") as f:
        json.dump(rec, f, indent=1)
    os.replace(path + ".tmp", path)
    return proc, rec


def _node_record(proc: Any, node: dict[str, Any], node_ip: str, log_path: str,
                 **extra: Any) -> dict[str, Any]:
    """What ``quanta start`` records of a daemon it started (a head or a member)."""
    return {
        "address": node["DaemonAddress"],
        **extra,
        "pid": proc.pid,
        "node_id": node["NodeID"],
        "node_ip": node_ip,
        "session_dir": node["SessionDir"],
        "object_store_dir": node["ObjectStoreDir"],
        "log": log_path,
        "started_at": time.time(),
    }


def stop(force: bool = False, timeout: float = 10.0, head_only: bool = False
         ) -> tuple[dict[str, Any] | None, str, list[tuple[dict[str, Any], str]]]:
    """Stop the member nodes recorded on this machine (unless ``head_only``), then the
    recorded head. Returns ``(head record or None, what happened to it, [(member record, what
    happened)])``; what happened is ``"none"`` (nothing recorded), ``"stale"`` (its daemon was
    already gone), ``"stopped"`` (it shut down when asked) or ``"killed"`` (SIGKILL to its
    processes)."""
    with record_lock():
        members = []
        for mrec in [] if head_only else read_members():
            members.append((mrec, _stop_recorded(mrec, force, timeout)))
        rec = read_record()
        if rec is None:
            return None, "none", members
        return rec, _stop_recorded(rec, force, timeout), members


def _stop_recorded(rec: dict[str, Any], force: bool, timeout: float) -> str:
    """Stop the node of the record ``rec`` (head or member) and remove that record; returns
    what happened (see :func:`stop`). Record lock held."""
    how = stop_node_daemon(rec, force=force, timeout=timeout)
    if is_member_record(rec):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_member_path(rec["pid"]))
    else:
        remove_record(rec["pid"])
    return how


def is_member_record(rec: dict[str, Any]) -> bool:
    """Whether ``rec`` (written by ``quanta start``) is a member node's, not the head's."""
    return bool(rec.get("head_address"))


def stop_node(rec: dict[str, Any], *, force: bool = False, timeout: float = 10.0
              ) -> str | None:
    """Stop the one node ``rec`` describes (the head, or a member node started on this
    machine) and remove its record; never another node. Returns what happened (see
    :func:`stop`), or None when ``rec`` is no longer recorded (``quanta stop`` got there
    first)."""
    with record_lock():
        if is_member_record(rec):
            recorded = os.path.exists(_member_path(rec["pid"]))
        else:
            current = read_record()
            recorded = current is not None and current.get("pid") == rec["pid"]
        return _stop_recorded(rec, force, timeout) if recorded else None


def stop_node_daemon(rec: dict[str, Any], *, force: bool, timeout: float) -> str:
    """Stop the daemon ``rec`` describes (``pid``, ``address``, ``session_dir``,
    ``object_store_dir``): ask it to shut down and wait up to ``timeout`` (unless ``force``),
    then SIGKILL its process group and whatever of its session still runs, and delete its
    files. Returns ``"stale"``, ``"stopped"`` or ``"killed"`` (see :func:`stop`)."""
    pid = rec["pid"]
    session_dir = rec.get("session_dir", "")
    ours = is_daemon_process(pid, session_dir)
    asked = False
    if not force:
        try:
            rpc(rec["address"], "shutdown", timeout=2.0)
            asked = True
        except Exception:  # noqa: BLE001 - gone or hung: killed below
            pass
    if not ours and not asked:
        how = "stale"
    elif asked and _wait(lambda: not is_daemon_process(pid, session_dir), timeout):
        how = "stopped"
    else:
        how = "killed"
        if is_daemon_process(pid, session_dir):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    # The zygote and workers die with the daemon (parent-death signals); anything of the
    # session still alive (a daemon killed before it could stop them) is killed by pid.
    if session_dir:
        _wait(lambda: not session_pids(session_dir), 2.0 if how == "stopped" else 0.2)
        for p in session_pids(session_dir):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        _wait(lambda: not session_pids(session_dir), 5.0)
    _remove_files(rec)
    return how
