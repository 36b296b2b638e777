"""The one family of errors a chat connection can meet on the wire.

Every error a client can cause carries the *code* it will see in the
server's ``error`` message (docs/protocol.md, section 4), so the code that
refuses something and the answer the client reads are never out of step.
Two kinds matter to a server, and they are told apart by class:

* ``ProtocolError``: one message was refused (a bad name, an unknown
  type, a room you are not in).  The connection carries on: the client
  is told why and may try again.
* ``FramingError``: the byte stream itself broke its framing (a line
  with no end in sight, a frame that claims 4 GB).  Once the framing is
  lost, a byte stream cannot be trusted to find the next message, so the
  connection is closed after the error is sent -- but the messages that
  arrived intact before the bad bytes (``items``) are still handled.

Both are ``WireError``: a server catches that one class, and asks
``fatal`` what to do next.

>>> issubclass(FrameTooLarge, WireError), FrameTooLarge("x").code, FrameTooLarge.fatal
(True, 'too_large', True)
"""

from __future__ import annotations

from typing import Any


class WireError(Exception):
    """Something a client sent that the server refuses, with the wire code to answer."""

    code = "bad_frame"
    fatal = False  # True: the stream cannot be trusted any more; close the connection

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ProtocolError(WireError):
    """One message refused; the connection carries on.

    Raised with the code first, as the chat core reads best:
    ``ProtocolError(NAME_TAKEN, "the name ada is taken")``.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message, code)


class FramingError(WireError, ValueError):
    """The byte stream broke the framing rules: answer, then close.

    ``items`` (also called ``frames``) holds what was decoded intact from
    the same ``feed()`` call before the problem, so that a caller can still
    deliver it: nothing that arrived whole is lost because something after
    it was bad.
    """

    fatal = True

    def __init__(self, message: str, items: list[Any] | None = None, code: str | None = None):
        super().__init__(message, code)
        self.items: list[Any] = items or []

    @property
    def frames(self) -> list[Any]:
        return self.items


class LineTooLong(FramingError):
    code = "too_large"


class FrameTooLarge(FramingError):
    code = "too_large"
