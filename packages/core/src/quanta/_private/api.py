"""The public functions of ``quanta`` (Ray Core's names): init, get, put, wait, cancel ..."""

from __future__ import annotations

import atexit
import logging
import math
import numbers
import operator
import os
import shutil
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from quanta._private import worker_state
from quanta._private.core_worker import CoreWorker
from quanta.object_ref import ObjectRef, ObjectRefGenerator

logger = logging.getLogger("quanta")
_init_lock = threading.RLock()
_node_proc = None
_INIT_KEYS = ("num_cpus", "num_gpus", "resources", "memory", "object_store_memory")


class _Session:
    """What ``init()`` set up in this driver, undone by ``shutdown()``.

    ``primary``: this driver started the node (``proc``) and owns it; ``shutdown()`` stops
    it. Otherwise the driver connected to a running node (``proc`` is None) and
    ``shutdown()`` only disconnects."""

    def __init__(self, cw: CoreWorker, proc, node: dict[str, Any], namespace: str,
                 primary: bool = True) -> None:
        self.cw = cw
        self.proc = proc
        self.node = node
        self.namespace = namespace
        self.primary = primary


_session: _Session | None = None


def _check_number(name: str, value: Any, *, integer: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"init({name}=...) must be a number, got {value!r}")
    if value < 0:
        raise ValueError(f"init({name}=...) must be >= 0, got {value}")


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    memory: int | None = None,
    object_store_memory: int | None = None,
    namespace: str | None = None,
    ignore_reinit_error: bool = False,
    include_dashboard: bool | None = None,
    log_to_driver: bool = True,
    logging_level: int | str = logging.INFO,
    runtime_env: dict | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Start a node daemon for this machine (or connect to ``address``) and connect to it.

    ``address``: None or ``""`` (unless ``QUANTA_ADDRESS`` or ``RAY_ADDRESS`` is set): join
    the node ``quanta start --head`` runs on this machine, else start a new node owned by this
    driver, as ``"local"`` always does. ``"auto"``: connect to the cluster
    recorded by ``quanta start --head``. ``"unix:///path/node.sock"``, ``"host:port"`` or
    ``"tcp://host:port"``: connect to that node daemon. A driver that connects never stops
    the node: ``shutdown()`` only disconnects it.

    Returns a dict with the node's info. Raises RuntimeError if already initialized, unless
    ``ignore_reinit_error``. Unknown keyword arguments raise TypeError naming them; resource
    arguments given when connecting raise ValueError; ConnectionError when no node runs at
    ``address``.
    """
    global _session, _node_proc
    ignored = {"dashboard_host", "dashboard_port", "configure_logging", "log_to_driver",
               "_temp_dir", "_system_config", "include_dashboard", "local_mode",
               "logging_format", "_node_ip_address", "job_config"}
    unknown = set(kwargs) - ignored
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    for name in ("num_cpus", "num_gpus", "memory", "object_store_memory"):
        _check_number(name, locals()[name])
    if resources is not None:
        if not isinstance(resources, dict):
            raise TypeError(f"init(resources=...) must be a dict, got {type(resources).__name__}")
        for k in ("CPU", "GPU", "memory"):
            if k in resources:
                raise ValueError(f"init(resources=...) must not contain {k!r}: use "
                                 f"num_{k.lower()}s=... instead" if k != "memory" else
                                 "init(resources=...) must not contain 'memory': use memory=")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"init(namespace=...) must be a str, got {type(namespace).__name__}")
    if runtime_env:
        raise ValueError("runtime_env needs the quanta-runtime-env plugin, which is not "
                         "installed: pip install quanta-runtime-env")
    with _init_lock:
        if _session is None:
            from quanta._private import fd_limit

            fd_limit.raise_soft_limit()  # as Ray does: a connection per actor adds up
        if _session is not None:
            if ignore_reinit_error:
                return dict(_session.node)
            raise RuntimeError(
                "Quanta is already initialized: call shutdown() first, or pass "
                "ignore_reinit_error=True.")
        address = address or os.environ.get("QUANTA_ADDRESS") or os.environ.get("RAY_ADDRESS")
        if not address and _recorded_cluster_running():
            address = "auto"  # as Ray does: join the node `quanta start --head` started here
        if address not in (None, "", "local"):
            if not isinstance(address, str):
                raise TypeError(
                    f"init(address=...) must be a str, got {type(address).__name__}")
            given = {"num_cpus": num_cpus, "num_gpus": num_gpus, "resources": resources,
                     "memory": memory, "object_store_memory": object_store_memory}
            bad = [name for name in _INIT_KEYS if given[name] is not None]
            if bad:
                raise ValueError(
                    f"init({', '.join(f'{b}=' for b in bad)}...) cannot be set when connecting "
                    f"to an existing cluster (address={address!r}): its resources were fixed "
                    "when it started (`quanta start --head --num-cpus N ...`).")
            _session = _connect(address, namespace)
            return dict(_session.node)
        from quanta._private import resource_detect
        from quanta._private.node_launcher import start_local_node

        mem = memory or resource_detect.detect_memory_bytes()
        store = object_store_memory or resource_detect.default_object_store_bytes(mem)
        cpus = resource_detect.detect_cpus() if num_cpus is None else num_cpus
        proc, node = start_local_node(
            num_cpus=cpus, num_gpus=num_gpus or 0, memory=mem, object_store_memory=store,
            resources=resources or {})
        job_id = uuid.uuid4().hex[:8]
        cw = CoreWorker(
            mode="driver",
            session_dir=node["SessionDir"],
            daemon_address=node["DaemonAddress"],
            node_id=node["NodeID"],
            job_id=job_id,
            worker_id="driver-" + job_id,
            store_dir=node["ObjectStoreDir"],
        )
        cw.daemon_started_here = True
        cw.namespace = namespace or f"anonymous-{uuid.uuid4().hex[:8]}"
        cw.call_daemon("register_driver", job_id, os.getpid(), True, cw.namespace)
        worker_state.set_core_worker(cw)
        _session = _Session(cw, proc, node, cw.namespace)
        return dict(node)


def _recorded_cluster_running() -> bool:
    from quanta._private import cluster

    rec = cluster.read_record()
    return rec is not None and cluster.cluster_state(rec)[0] == "running"


def _connect(address: str, namespace: str | None) -> _Session:
    """Connect this driver to the running node daemon ``address`` names, as a non-primary
    driver: the node outlives it. Lock held."""
    from quanta._private import cluster, ids
    from quanta._private.transport import routed_address

    node = cluster.resolve_address(address)
    job_id = uuid.uuid4().hex[:8]
    try:
        cw = CoreWorker(
            mode="driver",
            session_dir=node["SessionDir"],
            daemon_address=node["DaemonAddress"],
            node_id=node["NodeID"],
            job_id=job_id,
            worker_id="driver-" + job_id,
            store_dir=node["ObjectStoreDir"],
        )
    except OSError as e:
        raise ConnectionError(
            f"init(address={address!r}): could not connect to the node daemon at "
            f"{node['DaemonAddress']}: {e}") from None
    cw.namespace = namespace or f"anonymous-{uuid.uuid4().hex[:8]}"
    try:
        info = cw.call_daemon("register_driver", job_id, os.getpid(), False, cw.namespace,
                              timeout=30)
        if info.get("NodeAddress"):  # a cluster node: processes of other nodes reach us
            cw.join_cluster(routed_address(info["NodeAddress"], cw.worker_id))
            cw.actor_home = cw.call_daemon("actor_home", timeout=30)
        # The node frees what this driver owned when its connection closes.
        cw.call_daemon("attach_driver", job_id, cw.worker_id, cw.address,
                       ids.process_prefix_hex(), timeout=30)
    except BaseException:
        cw.shutdown()
        _unlink_socket(cw.address)
        raise
    worker_state.set_core_worker(cw)
    return _Session(cw, None, info, cw.namespace, primary=False)


def _unlink_socket(address: str) -> None:
    if address.startswith("unix://"):
        try:
            os.unlink(address[len("unix://"):])
        except OSError:
            pass


def auto_init() -> CoreWorker:
    """Initialize with defaults on first use, as Ray does for ``.remote()`` and ``put``."""
    with _init_lock:
        if _session is None:
            init()
        return _session.cw


def is_initialized() -> bool:
    return _session is not None


def shutdown() -> None:
    """Stop the node daemon and workers this driver started; delete their files.

    A driver that connected to a running node (``init(address=...)``) only disconnects: the
    node and its other drivers go on. Also after the node daemon died
    (LocalRayletDiedError): then it only cleans up what the daemon left."""
    global _session
    with _init_lock:
        s = _session
        if s is None:
            return
        _session = None
        worker_state.set_core_worker(None)
        s.cw.closing = True  # the daemon's connection closing now is no news
        if not s.primary:
            # Closing the connection tells the daemon this driver is gone: it stops the
            # workers leased to it and frees the objects it owned.
            s.cw.shutdown()
            _unlink_socket(s.cw.address)
            return
        try:
            s.cw.call_daemon("shutdown", timeout=5)
        except Exception:  # noqa: BLE001 - the daemon may already be gone
            pass
        s.cw.shutdown()
        if s.proc is not None:
            try:
                s.proc.wait(10)
            except Exception:  # noqa: BLE001
                s.proc.kill()
                s.proc.wait(5)
        # The daemon deletes these itself; this covers a daemon that was killed outright.
        for path in (s.node.get("ObjectStoreDir"), s.node.get("SessionDir")):
            if path:
                shutil.rmtree(path, ignore_errors=True)


atexit.register(shutdown)


def _cw() -> CoreWorker:
    cw = worker_state.current_core_worker_or_none()
    return cw if cw is not None else auto_init()


def put(value: Any, *, _owner: Any = None) -> ObjectRef:
    """Store ``value`` in the object store and return its ref."""
    return _cw().put(value)


def get(object_refs: ObjectRef | Sequence[ObjectRef], *, timeout: float | None = None) -> Any:
    """The value(s) of one ref or a list of refs; raises the task's error if it failed.

    ``timeout``: None (wait as long as it takes) or a non-negative number of seconds;
    GetTimeoutError when it passes. After this driver's node daemon died, a ref whose value
    is not in this process raises LocalRayletDiedError; values already here (small objects
    this driver put or got) are still returned, as Ray does for local objects."""
    cw = _cw()
    if type(object_refs) is ObjectRef:
        if timeout is not None:
            timeout = _check_timeout(timeout, "get")
        return cw.get((object_refs,), timeout)[0]
    if isinstance(object_refs, ObjectRefGenerator):
        raise TypeError("get() of an ObjectRefGenerator: iterate it and get() each ref.")
    if not isinstance(object_refs, (list, tuple)):
        raise TypeError(
            f"get() expects an ObjectRef or a list of ObjectRefs, got "
            f"{type(object_refs).__name__}: {object_refs!r:.80}")
    for r in object_refs:
        if type(r) is not ObjectRef:
            raise TypeError(
                f"get() expects a list of ObjectRefs, but it contains a "
                f"{type(r).__name__}: {r!r:.80}")
    if timeout is not None:
        timeout = _check_timeout(timeout, "get")
    return cw.get(object_refs, timeout)


def _check_timeout(timeout: Any, fn: str) -> float | None:
    """``timeout`` of get() and wait(), not None: a non-negative real number of seconds
    (not a bool, not NaN). Returns it as a float (None for infinity); else TypeError (not a
    number) or ValueError (negative or NaN), naming the argument and what it may be."""
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(
            f"{fn}(timeout=...) must be None or a non-negative number of seconds, got "
            f"{timeout!r} (a {type(timeout).__name__})")
    timeout = float(timeout)
    if not timeout >= 0:  # negative, or NaN
        raise ValueError(
            f"{fn}(timeout=...) must be None or a non-negative number of seconds, got "
            f"{timeout!r}")
    return None if timeout == math.inf else timeout


_ref_id = operator.attrgetter("_id")


def wait(object_refs: Sequence[ObjectRef], *, num_returns: int = 1,
         timeout: float | None = None, fetch_local: bool = True
         ) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Split ``object_refs`` into (ready, not ready) once ``num_returns`` are ready."""
    if isinstance(object_refs, ObjectRef) or not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"wait() expects a list of ObjectRefs, got {type(object_refs).__name__}")
    # map() with C callables keeps these O(n) checks cheap: wait() is called in loops.
    if object_refs and set(map(type, object_refs)) != {ObjectRef}:
        bad = next(r for r in object_refs if type(r) is not ObjectRef)
        raise TypeError(f"wait() expects a list of ObjectRefs, but it contains a "
                        f"{type(bad).__name__}")
    if len(set(map(_ref_id, object_refs))) != len(object_refs):
        raise ValueError("wait() requires a list of unique object refs.")
    if type(num_returns) is not int or num_returns < 0:
        raise ValueError(f"num_returns must be an int >= 0, got {num_returns!r}")
    if num_returns > len(object_refs):
        raise ValueError(f"num_returns ({num_returns}) cannot exceed the number of refs "
                         f"({len(object_refs)})")
    if timeout is not None:
        timeout = _check_timeout(timeout, "wait")
    return _cw().wait(object_refs, num_returns, timeout, fetch_local)


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that makes ``object_ref``; ``get`` then raises TaskCancelledError."""
    if isinstance(object_ref, ObjectRefGenerator):  # a streaming call: cancel its task
        object_ref = ObjectRef(object_ref._task_id + b"\0\0\0\1", object_ref._owner, None,
                               count=False)
    if type(object_ref) is not ObjectRef:
        raise TypeError(f"cancel() expects an ObjectRef, got {type(object_ref).__name__}")
    _cw().cancel(object_ref, bool(force), bool(recursive))


def nodes() -> list[dict[str, Any]]:
    return _cw().call_daemon("nodes")


def cluster_resources() -> dict[str, float]:
    return _cw().call_daemon("cluster_resources")


def available_resources() -> dict[str, float]:
    return _cw().call_daemon("available_resources")


def get_gpu_ids() -> list[int]:
    """The GPU ids assigned to the current task (empty in the driver)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    cw = worker_state.current_core_worker_or_none()
    if cw is None or cw.mode == "driver" or not visible:
        return []
    return [int(x) for x in visible.split(",") if x.strip().isdigit()]


def remote(*args: Any, **options: Any) -> Any:
    """``@remote`` or ``@remote(**options)`` on a function (a task) or a class (an actor)."""
    from quanta.remote_function import RemoteFunction

    def wrap(target: Any) -> Any:
        if isinstance(target, type):
            from quanta.actor import ActorClass

            return ActorClass(target, options)
        return RemoteFunction(target, options)

    if len(args) == 1 and not options and callable(args[0]):
        return wrap(args[0])
    if args:
        raise TypeError("@remote takes keyword options only, e.g. @remote(num_cpus=2)")
    return wrap


