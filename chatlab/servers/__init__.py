"""Chat servers: one chat core, several ways of waiting on many sockets.

``make_server(model, ...)`` builds one by name, as ``chatlab serve --model`` does.
"""

from __future__ import annotations

from typing import Any

from ..limits import Limits
from .aio import AsyncioServer
from .base import DEFAULT_HOST, DEFAULT_PORT, BaseServer, Listener, ServerError, format_address, open_listener
from .selector import SelectorServer
from .threads import ThreadedServer

# The same chat core behind three ways of waiting on many sockets.
MODELS: dict[str, type[BaseServer]] = {
    "threads": ThreadedServer,  # a reader and a writer thread per client
    "selectors": SelectorServer,  # one thread, non-blocking sockets, a selectors event loop
    "asyncio": AsyncioServer,  # one asyncio event loop, a reader and a writer task per client
}


def make_server(
    model: str = "threads", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, limits: Limits | None = None,
    **options: Any,
) -> BaseServer:
    """A server of the given model (``threads``, ...), not yet started.  ``options``: e.g. ``db=FILE``."""
    try:
        cls = MODELS[model]
    except KeyError:
        raise ValueError(f"unknown server model {model!r}; choose from {', '.join(MODELS)}") from None
    return cls(host=host, port=port, limits=limits, **options)


__all__ = [
    "MODELS", "AsyncioServer", "BaseServer", "Listener", "SelectorServer", "ServerError", "ThreadedServer",
    "make_server",
    "format_address", "open_listener", "DEFAULT_HOST", "DEFAULT_PORT",
]
