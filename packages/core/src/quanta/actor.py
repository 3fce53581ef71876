"""Actors: ``@remote`` on a class, handles, method calls, names, ``kill`` and ``exit_actor``.

``ActorClass.remote(*args)`` registers the actor with the control store and returns an
:class:`ActorHandle` at once; the constructor runs in a worker dedicated to the actor.
``handle.method.remote(*args)`` sends the call straight to that worker and returns refs.
Handles can be passed to tasks and other actors; the actor lives while its owner does and
some handle to it exists (or until killed when ``lifetime="detached"``). The mechanics are in
``_private/actor_calls.py`` (caller), ``_private/node/actor_manager.py`` (control store) and
``_private/actor_runtime.py`` (the actor's process).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from typing import Any

from quanta._private import serialization
from quanta._private.actor_runtime import ActorExit
from quanta._private.ids import HexID
from quanta._private.options import (
    resource_request,
    validate_actor_options,
    validate_method_options,
)
from quanta._private.worker_state import current_core_worker, current_core_worker_or_none
from quanta.util.scheduling_strategies import (
    PlacementGroupSchedulingStrategy,
    apply_strategy,
    group_context,
    inherited_strategy,
)


def method(**options: Any) -> Any:
    """``@method(num_returns=..., concurrency_group=...)`` on an actor method."""
    opts = validate_method_options(options)

    def wrap(fn: Any) -> Any:
        fn.__quanta_method_options__ = opts
        return fn

    return wrap


def _cw() -> Any:
    from quanta._private.api import auto_init

    return current_core_worker_or_none() or auto_init()


class _MethodSpec:
    """How calls to one method are made: from ``@method`` and the class's options."""

    __slots__ = ("num_returns", "generator", "group", "max_task_retries", "retry_exceptions")

    def __init__(self, fn: Any, class_opts: dict[str, Any]) -> None:
        opts = getattr(fn, "__quanta_method_options__", {})
        nr = opts.get("num_returns")
        is_gen = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        self.generator = nr in ("streaming", "dynamic") or (nr is None and is_gen)
        self.num_returns = 1 if nr is None or self.generator else nr
        self.group = opts.get("concurrency_group")
        mtr = opts.get("max_task_retries", class_opts.get("max_task_retries"))
        self.max_task_retries = 0 if mtr is None else mtr
        self.retry_exceptions = opts.get("retry_exceptions",
                                         class_opts.get("retry_exceptions", False))

    def __reduce__(self):
        return (_rebuild_spec, (self.num_returns, self.generator, self.group,
                                self.max_task_retries, self.retry_exceptions))


def _rebuild_spec(*values: Any) -> _MethodSpec:
    spec = _MethodSpec.__new__(_MethodSpec)
    (spec.num_returns, spec.generator, spec.group, spec.max_task_retries,
     spec.retry_exceptions) = values
    return spec


class ActorClass:
    """A class decorated with ``@remote``. ``.remote(*args)`` creates an actor."""

    def __init__(self, cls: type, options: dict[str, Any]) -> None:
        self._cls = cls
        self._options = validate_actor_options(options)
        self._class_id: bytes | None = None
        self._blob: bytes | None = None
        functools.update_wrapper(self, cls, updated=())
        fns = {name: fn for name, fn in inspect.getmembers(
                   cls, lambda f: inspect.isfunction(f) or inspect.ismethod(f))
               if name not in ("__init__", "__new__", "__del__", "__reduce__",
                               "__getstate__", "__setstate__")}
        self._fns = fns
        self._is_async = any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)
                             for f in fns.values())
        self._meta_cache: dict[tuple, dict[str, Any]] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actors cannot be instantiated directly: use {self._cls.__name__}.remote(...) "
            f"instead of {self._cls.__name__}(...).")

    def options(self, **options: Any) -> _ActorClassOptions:
        return _ActorClassOptions(self, _merge_options(self._options, options))

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        return self._create(self._options, args, kwargs)

    def _meta(self, opts: dict[str, Any]) -> dict[str, Any]:
        key = (opts.get("max_task_retries"), repr(opts.get("retry_exceptions")),
               opts.get("max_pending_calls"), opts.get("max_concurrency"))
        meta = self._meta_cache.get(key)
        if meta is None:
            meta = {
                "class_name": self._cls.__name__,
                "methods": {name: _MethodSpec(fn, opts) for name, fn in self._fns.items()},
                "is_async": self._is_async,
                "max_pending_calls": opts.get("max_pending_calls") or -1,
                "groups": sorted(opts.get("concurrency_groups") or ()),
                # how many calls may run at once (ActorPool reads it)
                "max_concurrency": opts.get("max_concurrency") or (
                    1000 if self._is_async else 1),
            }
            self._meta_cache[key] = meta
        return meta

    def _export(self, cw: Any) -> bytes:
        if self._class_id is None:
            self._blob = serialization.dumps_function(self._cls)
            self._class_id = hashlib.sha1(self._blob).digest()
        cw.export_function(self._class_id, self._blob)
        return self._class_id

    def _create(self, opts: dict[str, Any], args: tuple, kwargs: dict) -> ActorHandle:
        cw = _cw()
        class_id = self._class_id if self._class_id in cw.exported else self._export(cw)
        meta = self._meta(opts)
        hold, schedule = actor_resources(opts)
        strategy = inherited_strategy(opts, cw)
        group = group_context(strategy)
        if isinstance(strategy, PlacementGroupSchedulingStrategy):
            hold, _ = apply_strategy(hold, strategy)
            schedule, _ = apply_strategy(schedule, strategy)
            strategy = "DEFAULT"
        groups = opts.get("concurrency_groups") or {}
        method_groups = {n: s.group for n, s in meta["methods"].items() if s.group}
        for n, g in method_groups.items():
            if g not in groups:
                raise ValueError(
                    f"Method {n!r} of {self._cls.__name__} uses concurrency_group={g!r}, "
                    f"which is not among the class's concurrency_groups "
                    f"{sorted(groups) or '(none)'}.")
        namespace = opts.get("namespace") or cw.current_namespace()
        info = {
            "name": opts.get("name"),
            "namespace": namespace,
            "detached": opts.get("lifetime") == "detached",
            "get_if_exists": bool(opts.get("get_if_exists")),
            "meta": meta,
            "max_restarts": opts.get("max_restarts") or 0,
            "resources": hold,
            "schedule_resources": schedule,
            "strategy": strategy or "DEFAULT",
        }
        runtime = {
            "is_async": self._is_async,
            "max_concurrency": opts.get("max_concurrency"),
            "concurrency_groups": groups,
            "method_groups": method_groups,
            "namespace": namespace,
            "name": opts.get("name"),
            "meta": meta,
            "detached": info["detached"],
            "pg": group,
        }
        actor_id, ref, existing = cw.create_actor(
            class_id=class_id, class_name=self._cls.__name__, args=args, kwargs=kwargs,
            info=info, runtime=runtime)
        if existing is not None:
            meta = existing["meta"]
        return ActorHandle(actor_id, meta, ref)

    def __repr__(self) -> str:
        return f"ActorClass({self._cls.__module__}.{self._cls.__qualname__})"


def actor_resources(opts: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """(held for the actor's life, needed to place it), by Ray's rules: with no num_cpus, an
    actor that names GPUs or custom resources holds 1 CPU; one that names none (memory at
    most) holds no CPU but needs 1 free CPU to be placed."""
    if opts.get("num_cpus") is not None:
        hold = resource_request(opts, default_cpus=0)
        return hold, hold
    if any(opts.get(k) for k in ("num_gpus", "resources", "accelerator_type")):
        hold = resource_request(opts, default_cpus=1)
        return hold, hold
    hold = resource_request(opts, default_cpus=0)
    schedule = dict(hold)
    schedule["CPU"] = 1.0
    return hold, schedule


class _ActorClassOptions:
    def __init__(self, ac: ActorClass, options: dict[str, Any]) -> None:
        self._ac = ac
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        return self._ac._create(self._options, args, kwargs)

    def options(self, **options: Any) -> _ActorClassOptions:
        return _ActorClassOptions(self._ac, _merge_options(self._options, options))


def _merge_options(base: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    if "concurrency_groups" in options:
        raise ValueError("concurrency_groups cannot be set in .options(): declare them in "
                         "@remote(concurrency_groups=...) on the class.")
    merged = dict(base)
    merged.update(validate_actor_options(options))
    return merged


class ActorID(HexID):
    """An actor's id (Ray's ``ActorID``): ``hex()`` and ``binary()``."""

    __slots__ = ()


class ActorHandle:
    """A handle to an actor: ``handle.method.remote(*args)`` calls it. Picklable."""

    def __init__(self, actor_id: str, meta: dict[str, Any], ref: Any) -> None:
        self._quanta_actor_id = actor_id
        self._meta = meta
        self._ref = ref  # the counted handle ref (None for detached actors)

    @property
    def _actor_id(self) -> ActorID:
        return ActorID(self._quanta_actor_id)

    def __getattr__(self, name: str) -> ActorMethod:
        if name in ("_meta", "_quanta_actor_id", "_ref"):  # not set yet (while unpickling)
            raise AttributeError(name)
        spec = self._meta["methods"].get(name)
        if spec is None:
            if name == "__ray_ready__":
                spec = _rebuild_spec(1, False, None, 0, False)
            elif name.startswith("__"):
                raise AttributeError(name)
            else:
                raise AttributeError(
                    f"The actor {self._meta['class_name']} has no method {name!r}.")
        bound = ActorMethod(self, name, spec, {})
        self.__dict__[name] = bound
        return bound

    def __reduce__(self):
        return (ActorHandle, (self._quanta_actor_id, self._meta, self._ref))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ActorHandle)
                and other._quanta_actor_id == self._quanta_actor_id)

    def __hash__(self) -> int:
        return hash(self._quanta_actor_id)

    def __repr__(self) -> str:
        return f"Actor({self._meta['class_name']}, {self._quanta_actor_id})"


class ActorMethod:
    """``handle.method``: ``.remote(*args)`` calls it, ``.options(...)`` overrides options.

    It keeps the handle's id, metadata and counted ref rather than the handle itself: the
    handle caches its methods, and a cycle would keep the actor alive until the garbage
    collector ran, instead of ending it when the last handle goes."""

    def __init__(self, handle: ActorHandle, name: str, spec: _MethodSpec,
                 overrides: dict[str, Any]) -> None:
        self._handle = _HandleData(handle._quanta_actor_id, handle._meta, handle._ref)
        self._name = name
        self._spec = spec
        self._overrides = overrides

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actor methods cannot be called directly: use "
            f"{self._handle._meta['class_name']}.{self._name}.remote(...) instead.")

    def options(self, **options: Any) -> ActorMethod:
        merged = dict(self._overrides)
        merged.update(validate_method_options(options))
        group = merged.get("concurrency_group")
        groups = self._handle._meta.get("groups", [])
        if group is not None and group not in groups and group != "_default":
            raise ValueError(
                f"concurrency_group={group!r} is not a concurrency group of "
                f"{self._handle._meta['class_name']}; its groups are "
                f"{groups or '(none)'} (declare them with @remote(concurrency_groups=...)).")
        return ActorMethod(self._handle, self._name, self._spec, merged)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        spec = self._spec
        o = self._overrides
        num_returns, generator = spec.num_returns, spec.generator
        if "num_returns" in o:
            nr = o["num_returns"]
            generator = nr in ("streaming", "dynamic")
            num_returns = 1 if generator else nr
        h = self._handle
        cw = current_core_worker_or_none() or _cw()
        refs = cw.submit_actor_call(
            actor_id=h._quanta_actor_id, class_name=h._meta["class_name"], method=self._name,
            args=args, kwargs=kwargs, num_returns=num_returns, generator=generator,
            max_retries=o.get("max_task_retries", spec.max_task_retries),
            retry_exceptions=o.get("retry_exceptions", spec.retry_exceptions),
            group=o.get("concurrency_group", spec.group), name=o.get("name"),
            handle_ref=h._ref, max_pending=h._meta.get("max_pending_calls", -1))
        if generator:
            return refs
        if num_returns == 1:
            return refs[0]
        if num_returns == 0:
            return None
        return refs


class _HandleData:
    __slots__ = ("_quanta_actor_id", "_meta", "_ref")

    def __init__(self, actor_id: str, meta: dict[str, Any], ref: Any) -> None:
        self._quanta_actor_id = actor_id
        self._meta = meta
        self._ref = ref


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the live actor called ``name`` in ``namespace`` (default: this job's).

    Raises ValueError when there is none."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor(name=...) must be a non-empty str, got {name!r}")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"get_actor(namespace=...) must be a str, got {namespace!r}")
    cw = _cw()
    rec = cw.call_actor_manager("get_named_actor", name, namespace or cw.current_namespace())
    return ActorHandle(rec["actor_id"], rec["meta"], cw.borrow_handle_ref(rec))


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill an actor's process now. Its pending and later calls raise ActorDiedError; with
    ``no_restart=False`` it is restarted if its ``max_restarts`` allows."""
    if not isinstance(actor, ActorHandle):
        raise ValueError(
            f"kill() only applies to actor handles, got {type(actor).__name__}; to stop a "
            "task use cancel(object_ref).")
    _cw().kill_actor(actor._quanta_actor_id, bool(no_restart))


def exit_actor() -> None:
    """End the current actor from inside one of its methods (no restart). The calling
    method's ref and every later call raise ActorDiedError, as in Ray."""
    cw = current_core_worker()
    if getattr(cw, "actor_id", None) is None:
        raise TypeError("exit_actor() can only be called inside an actor's method.")
    raise ActorExit()
