"""``@remote`` on a function: ``.remote()`` submits a task, ``.options()`` overrides options."""

from __future__ import annotations

import functools
import hashlib
import inspect
from typing import Any

from quanta._private import serialization
from quanta._private.options import resource_request, validate_task_options
from quanta._private.worker_state import current_core_worker_or_none
from quanta.util.scheduling_strategies import apply_strategy, group_context, inherited_strategy

_DEFAULTS = {"max_retries": 3, "retry_exceptions": False, "num_returns": None}


class RemoteFunction:
    """A function that runs as a task. Call ``.remote(*args, **kwargs)`` to submit it."""

    def __init__(self, fn: Any, options: dict[str, Any]) -> None:
        if not callable(fn):
            raise TypeError(f"@remote expects a function or a class, got {fn!r}")
        self._function = fn
        self._name = getattr(fn, "__qualname__", repr(fn))
        self._options = validate_task_options(options)
        self._is_generator = inspect.isgeneratorfunction(fn)
        self._fn_id: bytes | None = None
        self._blob: bytes | None = None
        self._prepared: dict[int, tuple] = {}
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Remote function {self._name} cannot be called directly: use "
            f"{self._name}.remote(...) instead."
        )

    def options(self, **options: Any) -> _BoundOptions:
        """Return a callable with ``.remote()`` that uses these options for one submission."""
        merged = dict(self._options)
        merged.update(validate_task_options(options))
        return _BoundOptions(self, merged)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._submit(self._options, args, kwargs, cache=True)

    def _export(self, cw) -> bytes:
        if self._fn_id is None:
            self._blob = serialization.dumps_function(self._function)
            self._fn_id = hashlib.sha1(self._blob).digest()
        cw.export_function(self._fn_id, self._blob)
        return self._fn_id

    def _prepare(self, opts: dict[str, Any]) -> tuple:
        resources = resource_request(opts, default_cpus=1)
        nr = opts.get("num_returns")
        generator = nr in ("streaming", "dynamic") or (nr is None and self._is_generator)
        num_returns = 1 if nr is None or generator else nr
        retry = opts.get("retry_exceptions", False)
        max_retries = opts.get("max_retries", 3)
        if max_retries is None:
            max_retries = 3
        chosen = opts.get("scheduling_strategy")
        resources, strategy = apply_strategy(resources, chosen)
        return (resources, num_returns, generator, max_retries, retry, strategy,
                opts.get("name"), group_context(chosen))

    def _submit(self, opts: dict[str, Any], args: tuple, kwargs: dict, cache: bool) -> Any:
        from quanta._private.api import auto_init

        cw = current_core_worker_or_none() or auto_init()
        fn_id = self._fn_id if self._fn_id in cw.exported else self._export(cw)
        if "scheduling_strategy" not in opts and cw.current_pg is not None \
                and cw.current_pg[3]:  # a child of a task that captures: in its group
            opts = dict(opts, scheduling_strategy=inherited_strategy(opts, cw))
            cache = False
        prepared = self._prepared.get(id(cw)) if cache else None
        if prepared is None:
            prepared = self._prepare(opts)
            if cache:
                self._prepared = {id(cw): prepared}
        resources, num_returns, generator, max_retries, retry, strategy, name, pg = prepared
        refs = cw.submit_task(
            fn_id=fn_id,
            fn_name=self._name,
            args=args,
            kwargs=kwargs,
            num_returns=num_returns,
            generator=generator,
            max_retries=max_retries,
            retry_exceptions=retry,
            resources=resources,
            strategy=strategy,
            name=name,
            pg=pg,
        )
        if generator:
            return refs
        if num_returns == 1:
            return refs[0]
        if num_returns == 0:
            return None
        return refs

    def __reduce__(self):
        return (RemoteFunction, (self._function, self._options))


class _BoundOptions:
    def __init__(self, rf: RemoteFunction, options: dict[str, Any]) -> None:
        self._rf = rf
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._rf._submit(self._options, args, kwargs, cache=False)

    def options(self, **options: Any) -> _BoundOptions:
        merged = dict(self._options)
        merged.update(validate_task_options(options))
        return _BoundOptions(self._rf, merged)
