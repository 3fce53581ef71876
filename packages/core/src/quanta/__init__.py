"""Quanta: a fast distributed runtime for Python that speaks Ray Core's API.

``import quanta as ray`` runs Ray Core programs unchanged.
"""

from quanta import actor as actor
from quanta import exceptions as exceptions
from quanta import util as util
from quanta._private.api import available_resources as available_resources
from quanta._private.api import cancel as cancel
from quanta._private.api import cluster_resources as cluster_resources
from quanta._private.api import get as get
from quanta._private.api import get_gpu_ids as get_gpu_ids
from quanta._private.api import init as init
from quanta._private.api import is_initialized as is_initialized
from quanta._private.api import nodes as nodes
from quanta._private.api import put as put
from quanta._private.api import remote as remote
from quanta._private.api import shutdown as shutdown
from quanta._private.api import wait as wait
from quanta._version import __version__ as __version__
from quanta.actor import get_actor as get_actor
from quanta.actor import kill as kill
from quanta.actor import method as method
from quanta.object_ref import ObjectRef as ObjectRef
from quanta.object_ref import ObjectRefGenerator as ObjectRefGenerator
from quanta.runtime_context import get_runtime_context as get_runtime_context

__all__ = [
    "ObjectRef",
    "ObjectRefGenerator",
    "__version__",
    "actor",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "util",
    "wait",
]
