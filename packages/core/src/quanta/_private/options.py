"""Validation of ``@remote(...)`` and ``.options(...)`` for tasks: every option checked at the
call site with an error that names it and says what is allowed."""

from __future__ import annotations

from typing import Any

from quanta._private.resources import validate_request

TASK_OPTIONS = frozenset({
    "num_cpus", "num_gpus", "memory", "resources", "accelerator_type", "num_returns",
    "max_retries", "retry_exceptions", "name", "scheduling_strategy", "runtime_env",
    "max_calls", "enable_task_events", "label_selector", "_metadata",
})
STRATEGIES = ("DEFAULT", "SPREAD")


def _closest(name: str, allowed) -> str:
    import difflib

    match = difflib.get_close_matches(name, sorted(allowed), n=1)
    return f" Did you mean {match[0]!r}?" if match else ""


def validate_task_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Return ``opts`` checked and normalised. Raises ValueError/TypeError naming the option."""
    for key in opts:
        if key not in TASK_OPTIONS:
            raise ValueError(
                f"Invalid option {key!r} for a remote function.{_closest(key, TASK_OPTIONS)} "
                f"Valid options: {', '.join(sorted(TASK_OPTIONS))}."
            )
    out = dict(opts)
    nr = opts.get("num_returns", None)
    if nr is not None:
        if nr in ("streaming", "dynamic"):
            pass
        elif type(nr) is not int:
            raise TypeError(
                f"num_returns must be an int >= 0 or 'streaming', got {nr!r} "
                f"({type(nr).__name__})")
        elif nr < 0:
            raise ValueError(f"num_returns must be >= 0, got {nr}")
    mr = opts.get("max_retries", None)
    if mr is not None:
        if type(mr) is not int:
            raise TypeError(f"max_retries must be an int (-1 for infinite), got {mr!r}")
        if mr < -1:
            raise ValueError(f"max_retries must be -1 (infinite) or >= 0, got {mr}")
    re_ = opts.get("retry_exceptions", None)
    if re_ is not None and not isinstance(re_, bool):
        if not isinstance(re_, (list, tuple)) or not all(
                isinstance(c, type) and issubclass(c, BaseException) for c in re_):
            raise TypeError(
                "retry_exceptions must be a bool or a list of exception classes, "
                f"got {re_!r}")
        out["retry_exceptions"] = tuple(re_)
    name = opts.get("name", None)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    strat = opts.get("scheduling_strategy", None)
    if strat is not None:
        from quanta.util.scheduling_strategies import check_strategy

        out["scheduling_strategy"] = check_strategy(strat)
    if opts.get("runtime_env"):
        raise ValueError(
            "runtime_env needs the quanta-runtime-env plugin, which is not installed: "
            "pip install quanta-runtime-env")
    if opts.get("accelerator_type") is not None:
        if not isinstance(opts["accelerator_type"], str):
            raise TypeError("accelerator_type must be a str such as 'A100'")
    res = opts.get("resources")
    if res is not None and not isinstance(res, dict):
        raise TypeError(f"resources must be a dict of name to amount, got {type(res).__name__}")
    if any(k in opts for k in ("num_cpus", "num_gpus", "memory", "resources")):
        resource_request(out, default_cpus=1)  # raises naming the bad option
    return out


def resource_request(opts: dict[str, Any], default_cpus: float) -> dict[str, float]:
    res = dict(opts.get("resources") or {})
    if opts.get("accelerator_type"):
        res[f"accelerator_type:{opts['accelerator_type']}"] = 0.001
    rs = validate_request(
        num_cpus=opts.get("num_cpus"),
        num_gpus=opts.get("num_gpus"),
        memory=opts.get("memory"),
        resources=res or None,
        default_cpus=default_cpus,
    )
    return rs.to_dict()


ACTOR_OPTIONS = frozenset({
    "num_cpus", "num_gpus", "memory", "resources", "accelerator_type", "object_store_memory",
    "max_restarts", "max_task_retries", "max_concurrency", "max_pending_calls", "name",
    "namespace", "lifetime", "get_if_exists", "concurrency_groups", "scheduling_strategy",
    "runtime_env", "enable_task_events", "label_selector", "_metadata",
    "allow_out_of_order_execution",
})
METHOD_OPTIONS = frozenset({
    "num_returns", "concurrency_group", "max_task_retries", "retry_exceptions", "name",
    "enable_task_events", "_generator_backpressure_num_objects", "tensor_transport",
})


def _check_int(name: str, value: Any, minimum: int, what: str) -> None:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int ({what}), got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {what}, got {value}")


def validate_actor_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Check ``@remote(...)``/``.options(...)`` of an actor class; raise naming the option."""
    for key in opts:
        if key not in ACTOR_OPTIONS:
            raise ValueError(
                f"Invalid option {key!r} for an actor.{_closest(key, ACTOR_OPTIONS)} "
                f"Valid options: {', '.join(sorted(ACTOR_OPTIONS))}.")
    out = dict(opts)
    for key in ("max_restarts", "max_task_retries"):
        if opts.get(key) is not None:
            _check_int(key, opts[key], -1, "-1 (infinite) or >= 0")
    if opts.get("max_concurrency") is not None:
        _check_int("max_concurrency", opts["max_concurrency"], 1, ">= 1")
    if opts.get("max_pending_calls") is not None:
        mpc = opts["max_pending_calls"]
        if type(mpc) is not int or (mpc < 1 and mpc != -1):
            raise ValueError(f"max_pending_calls must be -1 (unlimited) or >= 1, got {mpc!r}")
    for key in ("name", "namespace"):
        v = opts.get(key)
        if v is not None and not isinstance(v, str):
            raise TypeError(f"{key} must be a str, got {type(v).__name__}")
        if isinstance(v, str) and not v:
            raise ValueError(f"{key} must be a non-empty str")
    lifetime = opts.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise ValueError(
            f"lifetime must be 'detached', 'non_detached' or None, got {lifetime!r}")
    gie = opts.get("get_if_exists")
    if gie is not None and not isinstance(gie, bool):
        raise TypeError(f"get_if_exists must be a bool, got {gie!r}")
    if gie and not opts.get("name"):
        raise ValueError("get_if_exists=True needs a name: pass name=... as well")
    groups = opts.get("concurrency_groups")
    if groups is not None:
        if not isinstance(groups, dict):
            raise TypeError("concurrency_groups must be a dict of group name to max "
                            f"concurrency, got {type(groups).__name__}")
        for g, n in groups.items():
            if not isinstance(g, str) or not g:
                raise TypeError(f"concurrency_groups keys must be non-empty strs, got {g!r}")
            _check_int(f"concurrency_groups[{g!r}]", n, 1, ">= 1")
    task_like = {k: v for k, v in opts.items()
                 if k in ("num_cpus", "num_gpus", "memory", "resources", "accelerator_type",
                          "scheduling_strategy", "runtime_env")}
    out.update(validate_task_options(task_like))
    return out


def validate_method_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Check ``@method(...)`` and ``actor.method.options(...)``."""
    for key in opts:
        if key not in METHOD_OPTIONS:
            raise ValueError(
                f"Invalid option {key!r} for an actor method.{_closest(key, METHOD_OPTIONS)} "
                f"Valid options: {', '.join(sorted(METHOD_OPTIONS))}.")
    task_like = {k: v for k, v in opts.items()
                 if k in ("num_returns", "retry_exceptions", "name")}
    out = dict(opts)
    out.update(validate_task_options(task_like))
    if opts.get("max_task_retries") is not None:
        _check_int("max_task_retries", opts["max_task_retries"], -1, "-1 (infinite) or >= 0")
    cg = opts.get("concurrency_group")
    if cg is not None and (not isinstance(cg, str) or not cg):
        raise TypeError(f"concurrency_group must be a non-empty str, got {cg!r}")
    return out
