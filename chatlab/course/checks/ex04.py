"""Checks of exercise 4: length-prefixed frames, encoded and decoded, and the limit at the header."""

from __future__ import annotations

import random
import struct
from typing import Any

from ...framing import FrameDecoder as ReferenceDecoder
from ...framing import encode_frame as reference_encode
from ..harness import Context, check, diagnose, plural, short, show_bytes, where_lists_differ, where_they_differ
from .ex03 import cut, feed

HINT_PIECES = ("the 4 header bytes may arrive in pieces too: unpack the header only once all 4 are in the buffer "
               "(else wait for the next feed)")
HINT_EXACTLY = "a frame of exactly max_size bytes is allowed: refuse only a longer one (>, not >=)"

DIAGNOSES = [
    diagnose(struct.error, HINT_PIECES, where="feed"),
]


def sizes(frames: list) -> str:
    """``1 frame of 2 bytes``, ``3 frames of 2, 0 and 26 bytes``."""
    if not all(isinstance(f, (bytes, bytearray)) for f in frames):
        return f"{plural(len(frames), 'item')}: {short(frames, 120)}"
    numbers = [f"{len(f):,}" for f in frames]
    if len(numbers) > 8:
        numbers = numbers[:7] + ["..."]
    listed = numbers[0] if len(numbers) == 1 else ", ".join(numbers[:-1]) + " and " + numbers[-1]
    return f"{plural(len(frames), 'frame')}" + (f" of {listed} bytes" if frames else "")


def what_went_wrong(expected: list[bytes], got: list) -> str | None:
    """A hint from how the frames differ, when the difference shows its cause (else None)."""
    n = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), None)
    if n is None:
        if len(got) < len(expected):
            return ("fewer frames than were sent: one feed() may complete several frames -- loop until the "
                    "buffer holds too little for the next header or payload")
        return None
    want, came = expected[n], bytes(got[n]) if isinstance(got[n], (bytes, bytearray)) else None
    if came is not None and came == (struct.pack(">I", len(want)) + want)[:len(want)] and want:
        return (f"frame {n + 1} begins with its own 4-byte header: once the header is read, delete it from "
                "the buffer (del self.buffer[:HEADER.size]), so that the payload starts at byte 0")
    return None


def expect_frames(ctx: Context, expected: list[bytes], got: list[bytes], what: str, hint: str | None = None) -> None:
    if got != expected:
        raise ctx.fail(f"{what}: {sizes(expected)}", f"{sizes(got)}\n  {where_lists_differ(expected, got, 'frame')}",
                       what_went_wrong(expected, got) or hint)


def decode(ctx: Context, decoder: object, data: bytes, log: bool = False, limit: int = 65536) -> list[bytes]:
    """``decoder.feed(data)``, for a stream whose frames are all within ``limit``: FrameTooLarge is wrong here."""
    try:
        return feed(ctx, decoder, data, log=log)
    except ValueError as exc:  # FrameTooLarge: the student's exception class derives from ValueError
        if type(exc).__name__ != "FrameTooLarge":
            raise
        failure = exc
    # Why?  A decoder that refuses a frame of exactly its limit is off by one;
    # one that does not read a length from the wrong bytes.  (The probe, one
    # frame of exactly the limit, decodes without an error or an endless loop
    # even in a decoder that forgets to drop the header.)
    try:
        probe: Any = type(decoder)
        probe(max_size=4).feed(b"\x00\x00\x00\x04\x00\x00\x00\x01")
        hint = ("every frame here is within the limit, so the length was read from the wrong bytes: once a header "
                "is read, delete it from the buffer, and after each payload reset self.length to None")
    except ValueError:
        hint = HINT_EXACTLY
    raise ctx.fail(f"frames of at most {limit:,} bytes (the limit) to be allowed", f"FrameTooLarge: {failure}",
                   hint) from None


def header_hint(wanted: bytes, got: bytes, length: int) -> str | None:
    """A hint from the header encode_frame wrote, when it shows the mistake (else None)."""
    if len(got) < 4 or got[4:] != wanted[4:]:
        return None
    if got[:4] == wanted[:4][::-1] and got[:4] != wanted[:4]:
        return ("the header is little-endian: network byte order is big-endian, most significant byte first "
                "(HEADER = struct.Struct(\">I\"), or int.to_bytes(4, \"big\"))")
    said = int.from_bytes(got[:4], "big")
    if said == length + 4:
        return "the header counts its own 4 bytes: the length is the payload's only, len(payload)"
    return None


@check("encode_frame writes a 4-byte big-endian length, then the payload", points=2,
       hint="HEADER.pack(len(payload)) + payload: \">I\" is 4 bytes, big-endian (network byte order), unsigned")
def encoding(ctx: Context) -> None:
    ex = ctx.load("ex04_frames")
    for payload in (b"hi", b"", b"x" * 300, b'{"type":"say","text":"hi"}'):
        ctx.step(f"encode_frame({short(payload, 40)})")
        got = ex.encode_frame(payload)
        wanted = struct.pack(">I", len(payload)) + payload
        if not isinstance(got, (bytes, bytearray)):
            raise ctx.fail(f"the {plural(len(wanted), 'byte')} {show_bytes(wanted)}", f"{type(got).__name__} "
                           f"{short(got, 200)}", "encode_frame returns bytes: the header, then the payload")
        if got != wanted:
            raise ctx.fail(f"the {plural(len(wanted), 'byte')} {show_bytes(wanted)}",
                           f"{show_bytes(bytes(got))}\n  {where_they_differ(wanted, bytes(got))}",
                           header_hint(wanted, bytes(got), len(payload)))
    ctx.step("encode_frame(65536 bytes): at the limit, allowed")
    try:
        ex.encode_frame(b"\x00" * 65536)
    except ex.FrameTooLarge as exc:
        raise ctx.fail("a payload of exactly 65536 bytes (MAX_FRAME) to be encoded", f"FrameTooLarge: {exc}",
                       "a payload of exactly max_size bytes is allowed: refuse only a longer one (>, not >=)") from None
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
    got = decode(ctx, ex.FrameDecoder(), stream)
    expect_frames(ctx, payloads, got, "fed at once")
    ctx.step("the same, one byte at a time")
    decoder = ex.FrameDecoder()
    got = []
    for i in range(len(stream)):
        got += decode(ctx, decoder, stream[i:i + 1])
    expect_frames(ctx, payloads, got, "fed one byte at a time", HINT_PIECES)
    for largest in (3, 7, 1500):
        decoder = ex.FrameDecoder()
        pieces = cut(stream, rng, largest)
        ctx.step(f"the same in {len(pieces)} pieces of 1 to {largest} bytes")
        got = [f for piece in pieces for f in decode(ctx, decoder, piece)]
        expect_frames(ctx, payloads, got, "cut at random")


@check("speaks chatlab's frames: both directions agree with chatlab.framing", points=1,
       hint="the header is the payload's length as 4 bytes, big-endian; nothing else comes between frames")
def interop(ctx: Context) -> None:
    ex = ctx.load("ex04_frames")
    messages = [b'{"type":"hello","name":"ada"}', b'{"type":"say","text":"h\xc3\xa9llo"}', b"{}"]
    ctx.step("your encode_frame -> chatlab's FrameDecoder")
    stream = b"".join(ex.encode_frame(m) for m in messages)
    try:
        ours = ReferenceDecoder().feed(stream)
    except Exception as exc:  # chatlab's decoder refusing the student's bytes: the student's bug, not ours
        first = bytes(stream[:4])
        raise ctx.fail("chatlab's FrameDecoder to decode your frames: "
                       f"{sizes(messages)}", f"it refused them: {type(exc).__name__}: {exc}\n"
                       f"  your first header is {first.hex(' ')}: {int.from_bytes(first, 'big'):,} bytes, read "
                       "big-endian\n  your frames: " + show_bytes(stream).replace("\n", "\n  "),
                       header_hint(struct.pack(">I", len(messages[0])) + messages[0], stream[:4 + len(messages[0])],
                                   len(messages[0])) or "the header is the payload's length as 4 bytes, "
                       "big-endian; nothing else comes between frames") from None
    expect_frames(ctx, messages, ours, "chatlab to decode your frames")
    ctx.step("chatlab's encode_frame -> your FrameDecoder")
    theirs = decode(ctx, ex.FrameDecoder(), b"".join(reference_encode(m) for m in messages))
    expect_frames(ctx, messages, theirs, "your decoder to decode chatlab's frames")


@check("an oversized frame is refused at its header, before any payload", points=2,
       hint="check the length as soon as the 4 header bytes are in, and raise FrameTooLarge then: "
            "do not wait for (or keep) the payload")
def refused_at_header(ctx: Context) -> None:
    ex = ctx.load("ex04_frames")
    ctx.step("FrameDecoder(max_size=100)")
    decoder = ex.FrameDecoder(max_size=100)
    got = decode(ctx, decoder, struct.pack(">I", 100) + b"a" * 100, log=True, limit=100)
    expect_frames(ctx, [b"a" * 100], got, "a frame of exactly 100 bytes to be allowed")
    try:
        feed(ctx, decoder, struct.pack(">I", 101))
    except ex.FrameTooLarge as exc:
        ctx.step(f"FrameTooLarge from the header alone: {exc}")
    else:
        raise ctx.fail("FrameTooLarge from the header announcing 101 bytes", "no exception: it waits for the payload",
                       "check the length as soon as the 4 header bytes are in, before waiting for the payload")

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
    got = decode(ctx, ex.FrameDecoder(), reference_encode(b"b" * 65536))
    expect_frames(ctx, [b"b" * 65536], got, "a frame of exactly 65536 bytes to be allowed")
