"""Framing, sans-IO: bytes in any pieces give the same messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatlab.framing import (
    FrameDecoder,
    FrameTooLarge,
    LineDecoder,
    LineTooLong,
    encode_frame,
    encode_line,
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, duplicates allowed)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def feed_all(decoder, chunks: list[bytes]) -> list[bytes]:
    out = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


# ----------------------------------------------------------------- lines

line_text = st.binary(max_size=200).filter(lambda b: b"\n" not in b and not b.endswith(b"\r"))


@given(st.lists(line_text, max_size=20), st.lists(st.integers(min_value=0), max_size=30),
       st.booleans())
def test_lines_any_split_decodes_the_same(lines, cuts, crlf):
    ending = b"\r\n" if crlf else b"\n"
    stream = b"".join(line + ending for line in lines)
    assert feed_all(LineDecoder(), split(stream, cuts)) == lines


@given(st.lists(line_text, max_size=10))
def test_lines_one_byte_at_a_time(lines):
    stream = b"".join(line + b"\n" for line in lines)
    assert feed_all(LineDecoder(), [stream[i : i + 1] for i in range(len(stream))]) == lines


@given(st.lists(st.text(max_size=50).filter(lambda t: "\n" not in t and "\r" not in t), max_size=10))
def test_lines_round_trip(texts):
    stream = b"".join(encode_line(t) for t in texts)
    assert [line.decode() for line in LineDecoder().feed(stream)] == texts


def test_line_at_the_limit_is_fine_and_one_more_byte_is_not():
    decoder = LineDecoder(max_length=10)
    assert decoder.feed(b"x" * 10 + b"\r\n") == [b"x" * 10]
    assert decoder.feed(b"y" * 10 + b"\n") == [b"y" * 10]
    with pytest.raises(LineTooLong):
        decoder.feed(b"z" * 11 + b"\n")


def test_line_too_long_is_detected_at_the_limit_not_at_the_newline():
    decoder = LineDecoder(max_length=10)
    decoder.feed(b"x" * 10)  # still possible: the newline may come next
    assert decoder.pending == 10
    with pytest.raises(LineTooLong):
        decoder.feed(b"x")  # 11 bytes and no end: too long, known now
    # It never held more than its limit (plus a possible CR).
    assert decoder.pending <= 11


def test_a_cr_at_the_limit_may_still_be_half_of_crlf():
    decoder = LineDecoder(max_length=4)
    assert decoder.feed(b"abcd\r") == []
    assert decoder.feed(b"\n") == [b"abcd"]


def test_good_lines_before_an_oversized_one_are_kept():
    decoder = LineDecoder(max_length=8)
    with pytest.raises(LineTooLong) as info:
        decoder.feed(b"one\ntwo\n" + b"x" * 100)
    assert info.value.frames == [b"one", b"two"]
    assert info.value.code == "too_large"


def test_encode_line_refuses_line_breaks():
    with pytest.raises(ValueError):
        encode_line("two\nlines")


# ---------------------------------------------------------------- frames

payloads = st.lists(st.binary(max_size=300), max_size=20)


@given(payloads, st.lists(st.integers(min_value=0), max_size=30))
def test_frames_any_split_decodes_the_same(frames, cuts):
    stream = b"".join(encode_frame(f) for f in frames)
    assert feed_all(FrameDecoder(), split(stream, cuts)) == frames


@given(payloads)
def test_frames_one_byte_at_a_time(frames):
    stream = b"".join(encode_frame(f) for f in frames)
    assert feed_all(FrameDecoder(), [stream[i : i + 1] for i in range(len(stream))]) == frames


@given(st.binary(max_size=2000))
def test_frame_round_trip(payload):
    assert FrameDecoder().feed(encode_frame(payload)) == [payload]


def test_header_is_four_bytes_big_endian():
    assert encode_frame(b"hi") == b"\x00\x00\x00\x02hi"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert FrameDecoder().feed(b"\x00\x00\x00\x00") == [b""]


def test_oversized_frame_is_refused_at_the_header():
    decoder = FrameDecoder(max_size=65536)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"\xff\xff\xff\xff")  # claims 4 GiB: not one payload byte is read
    assert "4294967295" in str(info.value)
    assert decoder.pending == 0


def test_frame_at_the_limit_is_fine():
    decoder = FrameDecoder(max_size=65536)
    payload = b"a" * 65536
    assert decoder.feed(encode_frame(payload)) == [payload]
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"\x00\x01\x00\x01")  # 65537


def test_good_frames_before_an_oversized_one_are_kept():
    decoder = FrameDecoder(max_size=100)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(encode_frame(b"ok") + b"\x00\x00\x10\x00")
    assert info.value.frames == [b"ok"]


def test_encode_frame_refuses_oversize():
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * 65537)


def test_pending_counts_a_partial_frame():
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00")
    assert decoder.pending == 2
    decoder.feed(b"\x00\x05abc")
    assert decoder.pending == 7
    assert decoder.feed(b"de") == [b"abcde"]
    assert decoder.pending == 0
