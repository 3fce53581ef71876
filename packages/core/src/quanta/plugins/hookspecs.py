"""Hook specifications: the contract between Quanta and its plugins.

A plugin is any module or object with functions named after the hooks below, marked with
:data:`hookimpl`.  Every hook name starts with ``quanta_``; that prefix is reserved, so a
function called ``quanta_<something>`` that matches no hook here is rejected when the plugin is
registered (see :mod:`quanta.plugins.manager`).

None of the hooks is ``firstresult``: each is called on every plugin that implements it and
the caller receives the list of non-``None`` results.  An implementation may accept fewer
arguments than its specification (pluggy passes only the ones it names), never more.

The hooks are grouped by the phase of the runtime's life in which they are called.  Changing a
name or a signature here is a breaking change for third-party plugins; ``docs/plugins.md``
documents every signature and a test keeps the two in step.
"""

import pluggy

__all__ = [
    "hookimpl",
    "hookspec",
    "quanta_accelerator_managers",
    "quanta_runtime_env_plugins",
    "quanta_task_events",
    "quanta_util_exports",
]

#: Marks the hook specifications below.  Internal: plugins never need it.
hookspec = pluggy.HookspecMarker("quanta")

#: Marks a function of a plugin as the implementation of the hook of the same name.
hookimpl = pluggy.HookimplMarker("quanta")


# --------------------------------------------------------------------------------------------
# Phase 1: the driver or worker process (lazy, on first use of ``quanta.util``)
# --------------------------------------------------------------------------------------------


@hookspec
def quanta_util_exports() -> dict[str, object]:
    """Publish names under the ``quanta.util`` namespace.

    Called: lazily, once per process, the first time an attribute of ``quanta.util`` is looked
    up that the module itself does not define (for instance ``quanta.util.ActorPool`` in a
    process where that class comes from a plugin).  The merged result is cached until a plugin
    is registered or unregistered.

    Parameters: none.

    Returns: a mapping from attribute name (a valid Python identifier) to the object to
    publish, for example ``{"ActorPool": ActorPool, "queue": queue_module}``.  ``None`` or an
    empty dict publishes nothing.  Keep the implementation cheap: import what you publish, but
    do no other work.

    Not firstresult: the dicts of all plugins are merged.  A name published by two plugins is
    an error (:class:`RuntimeError` naming both plugins) rather than a silent override.
    """
    raise NotImplementedError  # a specification: pluggy never calls its body


# --------------------------------------------------------------------------------------------
# Phase 2: node start-up (each node daemon)
# --------------------------------------------------------------------------------------------


@hookspec
def quanta_accelerator_managers() -> list[object]:
    """Contribute accelerator managers to the node.

    Called: once per node daemon, while it starts and before it advertises its resources to
    the cluster.  Worker processes and drivers do not call it.

    Parameters: none.

    Returns: a list of accelerator manager objects.  Each one describes a single kind of
    accelerator: the resource name it is scheduled under (for example ``"GPU"`` or
    ``"TPU"``), how to detect how many devices the node has, the environment variable that
    restricts a worker to the devices it was granted (for example ``CUDA_VISIBLE_DEVICES``),
    and which fractional requests are valid.  The expected interface is the accelerator
    manager interface of the core runtime.  An empty list or ``None`` contributes nothing.

    Not firstresult: the lists of all plugins are concatenated.  Resource names must be unique
    across all managers, built-in ones included; a clash is an error, not an override.
    """
    raise NotImplementedError  # a specification: pluggy never calls its body


# --------------------------------------------------------------------------------------------
# Phase 3: task and actor set-up (runtime environments)
# --------------------------------------------------------------------------------------------


@hookspec
def quanta_runtime_env_plugins() -> list[object]:
    """Contribute handlers for fields of a ``runtime_env``.

    Called: once per process, the first time a runtime environment has to be validated (the
    driver, when a task, actor or job is submitted with a ``runtime_env``) or prepared (the node
    daemon, before it starts a worker for that environment).

    Parameters: none.

    Returns: a list of handler objects.  Each handler owns one or more top-level ``runtime_env``
    keys: it validates their values on the driver and sets up the environment (files, packages,
    environment variables) on the node before the worker runs.  An empty list or ``None``
    contributes nothing.

    Not firstresult: the lists of all plugins are concatenated.  A key claimed by two handlers,
    or by a handler and the core runtime, is an error.
    """
    raise NotImplementedError  # a specification: pluggy never calls its body


# --------------------------------------------------------------------------------------------
# Phase 4: task execution (observability)
# --------------------------------------------------------------------------------------------


@hookspec
def quanta_task_events(events: list[dict]) -> None:
    """Receive task state events in batches.

    Called: repeatedly while the runtime is up, each time a batch of task state transitions
    (submitted, scheduled, running, finished, failed, ...) has been collected, typically from
    a background thread rather than from the thread that runs the task.  When no plugin
    implements it the call does nothing: the default is a no-op.

    Parameters:
        events: the batch, one ``dict`` per state transition, oldest first.  The list and its
            dicts are shared between all plugins: read them, do not mutate them, and copy what
            you keep.  Ignore keys you do not know; new keys may be added in any release.

    Returns: ``None``.  Results are ignored.  Implementations must return quickly (hand slow
    work such as network export to your own thread) and must not raise.

    Not firstresult: every implementing plugin receives every batch.
    """
