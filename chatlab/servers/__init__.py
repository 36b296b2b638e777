"""Chat servers: one chat core, several ways of waiting on many sockets.

``make_server(model, ...)`` builds one by name, as ``chatlab serve --model`` does.
"""

from __future__ import annotations

from ..limits import Limits
from .base import DEFAULT_HOST, DEFAULT_PORT, BaseServer, ServerError, format_address, open_listener
from .threads import ThreadedServer

MODELS: dict[str, type[BaseServer]] = {"threads": ThreadedServer}


def make_server(
    model: str = "threads", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, limits: Limits | None = None,
    **options: object,
) -> BaseServer:
    """A server of the given model (``threads``, ...), not yet started.  ``options``: e.g. ``db=FILE``."""
    try:
        cls = MODELS[model]
    except KeyError:
        raise ValueError(f"unknown server model {model!r}; choose from {', '.join(MODELS)}") from None
    return cls(host=host, port=port, limits=limits, **options)


__all__ = [
    "MODELS", "BaseServer", "ServerError", "ThreadedServer", "make_server",
    "format_address", "open_listener", "DEFAULT_HOST", "DEFAULT_PORT",
]
