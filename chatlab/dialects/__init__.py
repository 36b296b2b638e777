"""Wire dialects: the ways a client's bytes can carry chat messages.

Each dialect is one sans-IO module (``base.py`` says what a dialect is):

* ``frames`` -- length-prefixed JSON frames, the dialect of programs;
* ``lines`` -- lines of text, for a person at ``nc`` or ``telnet``;
* ``irc`` -- IRC (RFC 1459/2812), for real IRC clients on a port of their own;
* ``detect`` -- the main port's greeter: the banner, then frames or lines
  chosen by the client's first byte;
* ``web`` -- the web port: HTTP/1.1 for the chat page (h11), upgraded to
  ``websocket``, one JSON message per WebSocket message (wsproto).  These
  two need the ``web`` extra, and are imported from their modules;
* ``client`` -- the other end: what every chatlab client reads the server with.

A server listens on one or more ports, and each port names the dialect its
connections start in (``chatlab.servers.Listener``).  Adding a dialect is a
new module and one entry in ``DIALECTS``: neither the chat core nor any
server model changes, since both speak messages, never bytes of a dialect.
"""

from __future__ import annotations

from .base import Dialect, Framed, Message, Reply, Unit
from .detect import MainPort
from .frames import FramesDialect
from .irc import IrcDialect
from .lines import LinesDialect

#: Dialects by name: what a listener's connections may start in.
DIALECTS: dict[str, type[Dialect]] = {
    MainPort.name: MainPort,  # "detecting": the main port
    FramesDialect.name: FramesDialect,
    LinesDialect.name: LinesDialect,
    IrcDialect.name: IrcDialect,  # chatlab serve --irc-port
}


def register(dialect: type[Dialect]) -> type[Dialect]:
    """Add a dialect to ``DIALECTS`` (usable as a class decorator)."""
    DIALECTS[dialect.name] = dialect
    return dialect


__all__ = ["DIALECTS", "Dialect", "Framed", "FramesDialect", "IrcDialect", "LinesDialect", "MainPort", "Message", "Reply",
           "Unit",
           "register"]
