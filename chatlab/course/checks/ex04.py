"""Checks of exercise 4: length-prefixed frames, encoded and decoded, and the limit at the header."""

from __future__ import annotations

import random
import struct

from ...framing import FrameDecoder as ReferenceDecoder
from ...framing import encode_frame as reference_encode
from ..harness import Context, check, show_bytes
from .ex03 import cut, feed


def expect_frames(ctx: Context, expected: list[bytes], got: list[bytes], what: str) -> None:
    if got != expected:
        sizes = [len(f) for f in got] if all(isinstance(f, (bytes, bytearray)) for f in got) else got
        first = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), None)
        detail = ""
        if first is not None:
            detail = (f"\n  frame {first + 1} expected {show_bytes(expected[first][:64])}"
                      f"\n  frame {first + 1} got      {show_bytes(bytes(got[first][:64]))}")
        raise ctx.fail(f"{what}: {len(expected)} frames of {[len(f) for f in expected]} bytes",
                       f"{len(got)} frames of {sizes!r:.120} bytes{detail}")


@check("encode_frame writes a 4-byte big-endian length, then the payload", points=2,
       hint="HEADER.pack(len(payload)) + payload: \">I\" is 4 bytes, big-endian (network byte order), unsigned")
def encoding(ctx: Context) -> None:
    ex = ctx.load("ex04_frames")
    for payload in (b"hi", b"", b"x" * 300, b'{"type":"say","text":"hi"}'):
        ctx.step(f"encode_frame({payload!r:.40})")
        got = ex.encode_frame(payload)
        wanted = struct.pack(">I", len(payload)) + payload
        if got != wanted:
            raise ctx.fail(f"the {len(wanted)} bytes {show_bytes(wanted)}",
                           show_bytes(got) if isinstance(got, bytes) else repr(got)[:200],
                           "the first 4 bytes are the payload's length, most significant byte first: "
                           "300 is 00 00 01 2c")
    ctx.step("encode_frame(65536 bytes): at the limit, allowed")
    ex.encode_frame(b"\x00" * 65536)
    ctx.step("encode_frame(65537 bytes): over the limit")
    try:
        ex.encode_frame(b"\x00" * 65537)
    except ex.FrameTooLarge:
        ctx.step("FrameTooLarge")
    else:
        raise ctx.fail("FrameTooLarge for a payload over MAX_FRAME", "it was encoded")


@check("frames come out whole: fed at once, one byte at a time, and cut at random", points=3,
       hint="read the 4-byte header first (it may arrive in pieces too), then wait for exactly that many "
            "payload bytes; one feed() may complete several frames, or none")
def decoding(ctx: Context) -> None:
    ex = ctx.load("ex04_frames")
    rng = random.Random(8)
    payloads = [b"hi", b"", b"line\nbreaks\n and \x00 zeros", rng.randbytes(65536), rng.randbytes(1000),
                b"\x00\x00\x00\x05"]
    stream = b"".join(reference_encode(p) for p in payloads)
    ctx.step(f"frames of {[len(p) for p in payloads]} bytes ({len(stream)} bytes in all), "
             "payloads with newlines and zeros, one at the 65536-byte limit")
    got = feed(ctx, ex.FrameDecoder(), stream, log=False)
    expect_frames(ctx, payloads, got, "fed at once")
    ctx.step("the same, one byte at a time")
    decoder = ex.FrameDecoder()
    got = []
    for i in range(len(stream)):
        got += feed(ctx, decoder, stream[i:i + 1], log=False)
    expect_frames(ctx, payloads, got, "fed one byte at a time")
    for largest in (3, 7, 1500):
        decoder = ex.FrameDecoder()
        pieces = cut(stream, rng, largest)
        ctx.step(f"the same in {len(pieces)} pieces of 1 to {largest} bytes")
        got = [f for piece in pieces for f in feed(ctx, decoder, piece, log=False)]
        expect_frames(ctx, payloads, got, "cut at random")


@check("speaks chatlab's frames: both directions agree with chatlab.framing", points=1,
       hint="the header is the payload's length as 4 bytes, big-endian; nothing else comes between frames")
def interop(ctx: Context) -> None:
    ex = ctx.load("ex04_frames")
    messages = [b'{"type":"hello","name":"ada"}', b'{"type":"say","text":"h\xc3\xa9llo"}', b"{}"]
    ctx.step("your encode_frame -> chatlab's FrameDecoder")
    ours = ReferenceDecoder().feed(b"".join(ex.encode_frame(m) for m in messages))
    expect_frames(ctx, messages, ours, "chatlab to decode your frames")
    ctx.step("chatlab's encode_frame -> your FrameDecoder")
    theirs = feed(ctx, ex.FrameDecoder(), b"".join(reference_encode(m) for m in messages), log=False)
    expect_frames(ctx, messages, theirs, "your decoder to decode chatlab's frames")


@check("an oversized frame is refused at its header, before any payload", points=2,
       hint="check the length as soon as the 4 header bytes are in, and raise FrameTooLarge then: "
            "do not wait for (or keep) the payload")
def refused_at_header(ctx: Context) -> None:
    ex = ctx.load("ex04_frames")
    ctx.step("FrameDecoder(max_size=100)")
    decoder = ex.FrameDecoder(max_size=100)
    got = feed(ctx, decoder, struct.pack(">I", 100) + b"a" * 100)
    expect_frames(ctx, [b"a" * 100], got, "a frame of exactly 100 bytes to be allowed")
    try:
        feed(ctx, decoder, struct.pack(">I", 101))
    except ex.FrameTooLarge as exc:
        ctx.step(f"FrameTooLarge from the header alone: {exc}")
    else:
        raise ctx.fail("FrameTooLarge from the header announcing 101 bytes", "no exception: it waits for the payload")

    ctx.step("a fresh FrameDecoder() (limit 65536), fed a header announcing 4 GB, one byte at a time")
    decoder = ex.FrameDecoder()
    for i, byte in enumerate(b"\xff\xff\xff\xff", 1):
        try:
            feed(ctx, decoder, bytes([byte]), log=False)
        except ex.FrameTooLarge:
            if i < 4:
                raise ctx.fail("no verdict before the 4 header bytes are in", f"FrameTooLarge after {i} bytes")
            ctx.step("FrameTooLarge as soon as the 4th header byte arrived")
            break
    else:
        raise ctx.fail("FrameTooLarge once the header (ff ff ff ff: 4,294,967,295 bytes) is complete",
                       "no exception")
    ctx.step("FrameDecoder(): a header announcing 65537 bytes")
    try:
        feed(ctx, ex.FrameDecoder(), struct.pack(">I", 65537))
    except ex.FrameTooLarge:
        ctx.step("FrameTooLarge")
    else:
        raise ctx.fail("FrameTooLarge for 65537 bytes (the default limit is 65536)", "no exception")
    ctx.step("check that a decoder does not confuse the limit with the frame of exactly 65536 bytes")
    got = feed(ctx, ex.FrameDecoder(), reference_encode(b"b" * 65536), log=False)
    expect_frames(ctx, [b"b" * 65536], got, "a frame of exactly 65536 bytes to be allowed")
