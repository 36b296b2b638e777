"""Conversations read back from real captures, and their sequence diagrams.

Relative numbers and lengths are checked against tshark's own analysis of
the same files; what each segment means (retransmission, duplicate or
delayed ACK, the chat message it completes) against what the capture's
maker did (tests/data/make_captures.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from chatlab.net.conversation import CLIENT, SERVER, conversation, conversations
from chatlab.net.packets import read_packets

pytestmark = pytest.mark.timeout(60)
DATA = Path(__file__).parent / "data"
needs_tshark = pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed (apt-get install tshark)")


def load(name: str):
    return conversations(read_packets(DATA / name))


@needs_tshark
@pytest.mark.parametrize("name", ["frames_ipv4.pcap", "lines_ipv6_reset.pcap", "retransmission.pcap"])
def test_relative_numbers_match_tshark(name: str) -> None:
    out = subprocess.run(["tshark", "-r", str(DATA / name), "-T", "fields", "-e", "tcp.stream", "-e", "tcp.seq",
                          "-e", "tcp.ack", "-e", "tcp.len", "-e", "tcp.flags.ack"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    theirs: dict[int, list[tuple]] = {}
    for line in out.splitlines():
        stream, seq, ack, length, has_ack = line.split("\t")
        theirs.setdefault(int(stream), []).append((int(seq), int(ack) if has_ack == "1" else None, int(length)))
    ours = load(name)
    assert len(ours) == len(theirs)
    for conv, stream in zip(ours, sorted(theirs)):
        assert [(s.seq, s.ack, s.length) for s in conv.segments] == theirs[stream]


def test_a_frames_chat_reads_as_its_messages() -> None:
    ada, bob = load("frames_ipv4.pcap")
    assert ada.mode == bob.mode == "frames"
    assert [s.flags for s in ada.handshake] == ["SYN", "SYN, ACK", "ACK"]
    assert ada.closed == "FIN both ways"
    said = [(d, text) for _, d, text in ada.messages()]
    assert said[:3] == [(SERVER, said[0][1]), (CLIENT, "hello ada"), (SERVER, "welcome")]
    assert said[0][1].startswith("banner 'chatlab/1")
    assert (CLIENT, "say 'hello bob'") in said and (SERVER, "<ada> hello bob") in said
    assert said[-2:] == [(CLIENT, "bye"), (SERVER, "closing (quit)")]
    assert ada.count("retransmission") == ada.count("duplicate_ack") == 0


def test_a_message_in_two_segments_and_a_reset() -> None:
    (conv,) = load("lines_ipv6_reset.pcap")
    assert conv.mode == "lines" and conv.client[0] == "::1"
    first = next(s for s in conv.segments if s.length == 7)  # "two pie"
    second = conv.segments[conv.segments.index(first) + 1]  # "ces\nand a second line\n"
    assert first.partial and not first.messages and first.says() == "(part of a message)"
    assert second.messages == ["'two pieces'", "'and a second line'"] and not second.partial
    assert conv.closed == "RST from the client" and "RST" in conv.segments[-1].flags


def test_a_delayed_ack_is_seen_and_timed() -> None:
    (conv,) = load("lines_ipv6_reset.pcap")
    delayed = [s for s in conv.segments if s.delayed_ack]
    assert len(delayed) == 1 and delayed[0].is_pure_ack and delayed[0].direction == CLIENT
    assert 0.030 < delayed[0].delayed_ack < 0.5  # Linux's delayed-ACK timer: 40 ms at least
    assert "delayed ACK" in ", ".join(delayed[0].notes)


def test_a_lost_segment_its_retransmission_and_the_messages_held_behind_it() -> None:
    (conv,) = load("retransmission.pcap")
    again = [s for s in conv.segments if s.retransmission]
    lost = [s for s in conv.segments if s.presumed_lost]
    assert len(again) == 1 and len(lost) == 1 and (lost[0].seq, lost[0].length) == (again[0].seq, again[0].length)
    assert lost[0].direction == again[0].direction == CLIENT
    # The segments after the hole wait for it: the program reads them only with the retransmission.
    between = conv.segments[conv.segments.index(lost[0]) + 1:conv.segments.index(again[0])]
    held = [s for s in between if s.direction == CLIENT and s.length]
    assert held and all(s.held and not s.messages for s in held)
    assert again[0].messages[0] == "say 'message 2'" and len(again[0].messages) == 1 + len(held)
    assert any(s.duplicate_ack and s.sack for s in between)  # "I still miss 108, but I have 145-182"
    said = [text for _, d, text in conv.messages() if d == CLIENT and text.startswith("say")]
    assert said == [f"say 'message {i}'" for i in range(6)]  # every message, once, in order


def test_a_router_drop_list_marks_segments_lost() -> None:
    packets = read_packets(DATA / "frames_ipv4.pcap")
    # As if a router had dropped ada's "say hello bob", and told us so.
    dropped = [p for p in packets if b'"say"' in p.payload and b"hello bob" in p.payload]
    kept = [p for p in packets if p not in dropped]
    ada = conversation(kept, lost=dropped)
    assert len(dropped) == 1 and [s.lost for s in ada.segments].count(True) == 1
    said = [text for _, _, text in ada.messages()]
    assert "say 'hello bob'" not in said and "bye" not in said  # "bye" waits behind the hole for ever
    assert next(s for s in ada.segments if s.lost).notes == ["lost"]


def test_a_capture_of_headers_only_keeps_the_lengths(tmp_path: Path) -> None:
    from chatlab.net.pcap import PcapWriter, read_pcap

    linktype, records = read_pcap(DATA / "frames_ipv4.pcap")
    with PcapWriter(tmp_path / "short.pcap", linktype, snaplen=14 + 20 + 32 + 8) as pcap:  # 8 payload bytes
        for record in records:
            pcap.write(record.data, record.ts)
    whole, short = load("frames_ipv4.pcap")[0], conversations(read_packets(tmp_path / "short.pcap"))[0]
    assert [(s.seq, s.ack, s.length) for s in short.segments] == [(s.seq, s.ack, s.length) for s in whole.segments]
    assert short.messages() == [] and "payload not captured" in short.table()


def test_a_capture_without_tcp_has_no_conversation() -> None:
    packets = read_packets(DATA / "udp_icmp.pcap")
    assert conversations(packets) == []
    with pytest.raises(ValueError, match="no TCP connection with port 5050"):
        conversation(packets, port=5050)


def test_the_table_shows_every_segment() -> None:
    (conv,) = load("retransmission.pcap")
    table = conv.table()
    assert len(table.splitlines()) == 1 + len(conv.segments)
    assert "retransmission" in table and "duplicate ACK #1" in table and "lost: retransmitted later" in table


# ------------------------------------------------------------------ diagrams


@pytest.mark.parametrize("name", ["frames_ipv4.pcap", "lines_ipv6_reset.pcap", "retransmission.pcap"])
def test_a_diagram_draws_one_arrow_per_segment(name: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chatlab.net.diagram import KINDS, kind, sequence_diagram

    conv = load(name)[0]
    fig = sequence_diagram(conv, on="captured on lo")
    try:
        ax = fig.axes[0]
        arrows = [child for child in ax.get_children() if type(child).__name__ == "Annotation"]
        assert len(arrows) == len(conv.segments)
        labels = [t.get_text() for t in ax.texts]
        for s in conv.segments:
            assert any(t.startswith(s.label()) for t in labels), s.label()
        crosses = [line for line in ax.lines if line.get_marker() == "x"]
        assert len(crosses) == sum(1 for s in conv.segments if s.lost or s.presumed_lost)
        assert fig.texts or fig._suptitle is not None
        assert {kind(s) for s in conv.segments} <= set(KINDS)
        fig.savefig(tmp_path / "diagram.png", dpi=60)
        assert (tmp_path / "diagram.png").stat().st_size > 10_000
    finally:
        plt.close(fig)


def test_a_long_conversation_is_drawn_in_pages() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chatlab.net.diagram import sequence_diagram

    (conv,) = load("retransmission.pcap")
    fig = sequence_diagram(conv, start=5, limit=10, spacing="time")
    try:
        assert "segments 5-14 of" in fig._suptitle.get_text()
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="no segments"):
        sequence_diagram(conv, start=500)
