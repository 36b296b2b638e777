"""Exercise 2 -- reliable sending and receiving: TCP is a byte stream.

What you will learn
    ``send()`` may send less than you asked: it returns how many bytes the
    kernel took, and the rest is still yours to send.  ``recv(n)`` may
    return any piece of the stream, from 1 byte up to n -- and b"" once the
    other side has closed.  Two messages sent apart may arrive together, one
    message may arrive in pieces.  Here you write the two loops every
    protocol needs: ``send_all`` (what ``socket.sendall`` does for you) and
    ``recv_exactly``.

Read first
    notebooks/02_byte_stream.ipynb (the same messages arriving split and
    merged); the Python Socket HOWTO, "Using a Socket".

Check it
    chatlab check 2

The check sends through a real TCP connection whose buffers are tiny, so
that ``send()`` really does take only part of the data, and it delivers the
stream to ``recv()`` a few bytes at a time.
"""

from __future__ import annotations

import socket


def send_all(sock: socket.socket, data: bytes) -> None:
    """Send every byte of ``data``, however many ``send()`` calls that takes.

    Loop on ``sock.send`` -- not ``sock.sendall``, which is the loop you are
    writing.
    """
    # TODO: while some bytes are left: send() them, and drop from the front the number it returns
    raise NotImplementedError(
        "sent = sock.send(what is left); keep only data[sent:] and loop while anything is left (a "
        "memoryview slices without copying)"
    )


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``sock``; ConnectionError if the stream ends first."""
    # TODO: collect pieces until you have n bytes; ask recv() for at most the bytes still missing
    # TODO: recv() returning b"" before that: raise ConnectionError, saying how many bytes came
    raise NotImplementedError(
        "loop: piece = sock.recv(how many are still missing); b\"\" means the peer closed: raise "
        "ConnectionError; never ask for more than is missing, or you eat the next message"
    )
