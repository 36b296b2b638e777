"""Checks of exercise 3: the line decoder, fed whole, one byte at a time, and cut at random.

No sockets here: that is the point of a sans-IO decoder.  Whatever way the
stream is cut into chunks -- as TCP may cut it -- the lines must come out
the same.
"""

from __future__ import annotations

import random
from typing import Any

from ..harness import Context, check, plural, short, where_lists_differ


def cut(data: bytes, rng: random.Random, largest: int) -> list[bytes]:
    """``data`` in random pieces of 1 to ``largest`` bytes."""
    pieces, at = [], 0
    while at < len(data):
        size = rng.randint(1, largest)
        pieces.append(data[at:at + size])
        at += size
    return pieces


def feed(ctx: Context, decoder: Any, data: bytes, log: bool = True) -> list[bytes]:
    if log:
        ctx.step(f"feed({short(data, 90)})")
    got = decoder.feed(data)
    if not isinstance(got, list):
        raise ctx.fail("feed() to return a list of lines (bytes)", f"{type(got).__name__}: {short(got, 200)}",
                       "feed() returns the list of lines that data completed: [] if none")
    if log and got:
        ctx.step(f"  -> {short(got, 100)}")
    return got


def what_went_wrong(expected: list[bytes], got: list[bytes]) -> str | None:
    """A hint from how the lines differ, when the difference shows its cause (else None)."""
    n = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), None)
    if n is not None and isinstance(got[n], (bytes, bytearray)):
        want, came = expected[n], bytes(got[n])
        if came == want + b"\r":
            return (f"line {n + 1} kept the \\r of its \\r\\n ending: when a line ends with b\"\\r\" just "
                    "before the b\"\\n\", drop that one \\r")
        if b"\n" in came:
            return (f"line {n + 1} has a b\"\\n\" inside it: one feed() may complete several lines -- loop "
                    "over every b\"\\n\" in data, not just the first")
        if came.endswith(want) and len(came) > len(want):
            return (f"line {n + 1} came with the end of an earlier line in front of it: empty self.partial "
                    "once a line is complete")
        if want.endswith(came) and len(came) < len(want):
            return (f"line {n + 1} lost its start, which came in an earlier feed(): keep the start of an unfinished "
                    "line in self.partial between calls to feed(), and put it in front of the rest")
    if n is None and len(got) < len(expected):
        return ("fewer lines than newlines: one feed() may complete several lines -- loop over every b\"\\n\" "
                "in data, not just the first")
    return None


def expect_lines(ctx: Context, expected: list[bytes], got: list[bytes], what: str, hint: str | None = None) -> None:
    if got != expected:
        raise ctx.fail(f"{what}: {plural(len(expected), 'line')} {short(expected, 150)}",
                       f"{plural(len(got), 'line')} {short(got, 150)}\n  {where_lists_differ(expected, got, 'line')}",
                       what_went_wrong(expected, got) or hint)


@check("whole lines, an empty line and CRLF, in one chunk", points=1,
       hint="split at each b\"\\n\"; drop one b\"\\r\" just before it; an empty line is b\"\"")
def whole(ctx: Context) -> None:
    ex = ctx.load("ex03_lines")
    decoder = ex.LineDecoder()
    got = feed(ctx, decoder, b"hello\nworld\r\n\nlast")
    expect_lines(ctx, [b"hello", b"world", b""], got, "the three complete lines, without their endings")
    got = feed(ctx, decoder, b" line\n")
    expect_lines(ctx, [b"last line"], got, "the line started by the previous feed")
    got = feed(ctx, decoder, b"")
    expect_lines(ctx, [], got, "no line from no bytes")


@check("one byte at a time: each line comes out when its newline arrives", points=2,
       hint="keep the start of an unfinished line in self.partial between calls to feed()")
def byte_by_byte(ctx: Context) -> None:
    ex = ctx.load("ex03_lines")
    decoder = ex.LineDecoder()
    stream = b"ada\r\nbob says hi\n\n\x00binary\xff ok\r\n"
    expected = [b"ada", b"bob says hi", b"", b"\x00binary\xff ok"]
    ctx.step(f"feed {stream!r} one byte at a time")
    got: list[bytes] = []
    for i in range(len(stream)):
        byte = stream[i:i + 1]
        lines = feed(ctx, decoder, byte, log=False)
        ends_line = byte == b"\n"
        if bool(lines) != ends_line or len(lines) > 1:
            raise ctx.fail(f"feed({byte!r}) (byte {i} of the stream) to return "
                           + ("one line" if ends_line else "[] -- no line is complete yet"),
                           repr(lines), "a line is complete only when its b\"\\n\" has arrived")
        got += lines
    expect_lines(ctx, expected, got, "the lines, whole")


@check("many lines, merged and cut at random places, come out the same", points=2,
       hint="one feed() may complete several lines, or none, and may end in the middle of a line, "
            "or between \\r and \\n")
def random_cuts(ctx: Context) -> None:
    ex = ctx.load("ex03_lines")
    rng = random.Random(7)
    lines = [bytes(rng.choice(b"abcdefghij \x00\xff\t\r") for _ in range(rng.randint(0, 300))).replace(b"\r", b"")
             for _ in range(300)]
    ends = [rng.choice([b"\n", b"\r\n"]) for _ in lines]
    stream = b"".join(line + end for line, end in zip(lines, ends))
    for largest in (2, 50, 5000, len(stream)):
        decoder = ex.LineDecoder()
        pieces = cut(stream, rng, largest)
        ctx.step(f"feed {len(lines)} lines ({len(stream)} bytes) in {len(pieces)} pieces of 1 to {largest} bytes")
        got = [line for piece in pieces for line in feed(ctx, decoder, piece, log=False)]
        expect_lines(ctx, lines, got, "every line, in order")


@check("a line over the limit raises LineTooLong as soon as it is too long", points=2,
       hint="before keeping the start of a line, check the limit: raise LineTooLong when what you would "
            "hold passes max_length (one more byte may be the \\r of a \\r\\n)")
def limit(ctx: Context) -> None:
    ex = ctx.load("ex03_lines")
    ctx.step("LineDecoder(max_length=10)")
    decoder = ex.LineDecoder(max_length=10)
    try:
        got = feed(ctx, decoder, b"0123456789\r")
    except ex.LineTooLong as exc:
        raise ctx.fail("10 bytes and a \\r to be allowed: the \\r may be half of a \\r\\n",
                       f"LineTooLong: {exc}", "an unfinished line may hold max_length + 1 bytes: one more byte may "
                       "be the \\r of a \\r\\n, which does not count") from None
    try:
        got += feed(ctx, decoder, b"\n0123456789\n")
    except ex.LineTooLong as exc:
        raise ctx.fail("lines of exactly 10 bytes (max_length) to be allowed", f"LineTooLong: {exc}",
                       "a line of exactly max_length bytes is allowed: refuse only a longer one (>, not >=)") from None
    expect_lines(ctx, [b"0123456789", b"0123456789"], got, "lines of exactly 10 bytes are allowed")

    ctx.step("a fresh LineDecoder(max_length=10), fed b'x' one byte at a time")
    decoder = ex.LineDecoder(max_length=10)
    for count in range(1, 13):
        try:
            feed(ctx, decoder, b"x", log=False)
        except ex.LineTooLong as exc:
            if count <= 10:
                raise ctx.fail("10 bytes of a line to be allowed", f"LineTooLong after {count} bytes: {exc}")
            ctx.step(f"LineTooLong after {count} bytes: {exc}")
            break
    else:
        raise ctx.fail("LineTooLong by the 12th byte with no newline", "12 bytes kept, no exception",
                       "check the limit before keeping the bytes, not when the newline arrives: a decoder that "
                       "waits for the newline can be made to hold any amount")

    ctx.step("a fresh LineDecoder(max_length=10)")
    decoder = ex.LineDecoder(max_length=10)
    try:
        feed(ctx, decoder, b"y" * 1_000_000)
    except ex.LineTooLong:
        ctx.step("LineTooLong at once: nothing of the megabyte was kept")
    else:
        raise ctx.fail("LineTooLong from the 1,000,000-byte feed itself", "no exception: it was kept",
                       "check the limit before keeping the bytes, not when the newline arrives")

    ctx.step("LineDecoder() (the default limit: MAX_LINE = 4096 bytes)")
    decoder = ex.LineDecoder()
    try:
        expect_lines(ctx, [b"z" * 4096], feed(ctx, decoder, b"z" * 4096 + b"\n", log=False),
                     "a line of 4096 bytes to be allowed")
    except ex.LineTooLong as exc:
        raise ctx.fail("a line of exactly 4096 bytes (MAX_LINE) to be allowed", f"LineTooLong: {exc}",
                       "a line of exactly max_length bytes is allowed: refuse only a longer one (>, not >=)") from None
    try:
        feed(ctx, decoder, b"z" * 4097 + b"\n", log=False)
    except ex.LineTooLong:
        ctx.step("a line of 4097 bytes: LineTooLong")
    else:
        raise ctx.fail("LineTooLong for a line of 4097 bytes", "it was accepted")
