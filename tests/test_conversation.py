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

from chatlab.net.capture import Capture
from chatlab.net.conversation import CLIENT, SERVER, conversation, conversations
from chatlab.net.packets import read_packets
from net_support import needs_network, needs_nft, network  # noqa: F401 - network is a fixture

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


def test_a_drop_also_in_the_capture_is_marked_not_added() -> None:
    """A capture on the sender's wire holds the packet the router then dropped: one segment, marked lost."""
    import dataclasses

    packets = read_packets(DATA / "frames_ipv4.pcap")
    original = next(p for p in packets if b'"say"' in p.payload and b"hello bob" in p.payload)
    # The router's copy: the same TCP segment, one hop later (TTL one lower), a moment later.
    drop = dataclasses.replace(original, ts=original.ts + 0.001, ip=dataclasses.replace(original.ip, ttl=63))
    ada = conversation(packets, lost=[drop])
    assert len(ada.segments) == len(conversation(packets).segments)
    (lost,) = [s for s in ada.segments if s.lost]
    assert lost.packet is original and "say 'hello bob'" not in [text for _, _, text in ada.messages()]


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


@needs_network
@needs_nft
def test_a_loss_across_a_slow_link_holds_the_messages_behind_it(network) -> None:
    """Across a link with 50 ms of delay each way, the server's firewall drops one data segment as it
    arrives (after the router wrote it to b's capture): the capture shows it sent, the segments held
    behind it, the server's duplicate ACKs, and the retransmission a round trip later, which releases
    the messages."""
    from chatlab.client import ChatClient
    from chatlab.limits import Limits

    a, b = network.host("a"), network.host("b")
    network.link(a, b, delay=0.05)
    server = b.start_server("threads", limits=Limits(rate_limit=0))
    port = server.address[1]
    b.nft(f"table inet lab {{\n chain input {{\n type filter hook input priority 0\n"
          f" tcp dport {port} ip length > 120 numgen inc mod 1000 == 1 drop\n }}\n}}\n")
    with Capture("eth0", port=port, netns=b.namespace) as cap:  # b's wire, as the router delivers to it
        ada = a.call(ChatClient, b.address, port, name="ada")
        for i in range(4):
            ada.say(f"message {i} " + "x" * 80)  # back to back: they leave in flight together
        for i in range(4):
            ada.wait_for(lambda m: m.get("type") == "message" and m.get("text", "").startswith(f"message {i} "))
        ada.close()
        assert cap.wait(lambda ps: conversation(ps, port).closed == "FIN both ways" and ps[-1].tcp.flags == 0x10)
    c = conversation(cap.packets, port)
    lost = next(s for s in c.segments if s.presumed_lost)
    fill = next(s for s in c.segments if s.retransmission)
    assert lost.direction == fill.direction == CLIENT and (lost.seq, lost.length) == (fill.seq, fill.length)
    held = [s for s in c.segments if s.held]
    assert held and all(lost.t < s.t < fill.t for s in held)
    assert any(s.duplicate_ack or s.sack for s in c.segments if s.direction == SERVER and s.t < fill.t)
    assert fill.t - lost.t > 0.09  # a round trip at least: the receiver had to ask, the sender to resend
    assert fill.messages[0].startswith("say 'message 1") and len(fill.messages) == 1 + len(held)
    said = [text for _, d, text in c.messages() if d == CLIENT and text.startswith("say")]
    assert [text[:15] for text in said] == [f"say 'message {i} " for i in range(4)]


@needs_network
def test_a_tls_chat_reads_as_encrypted_records(network, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from chatlab.client import ChatClient
    from chatlab.tls import client_context, make_lab_pki, server_context

    from chatlab.servers import make_server

    paths = make_lab_pki(tmp_path / "certs", ["127.0.0.1"])
    host = network.host("tls")
    tls = host.keep(host.call(make_server, "threads", "127.0.0.1", 0,
                              tls=server_context(paths["cert"], paths["key"])))
    host.call(tls.start)
    with Capture("lo", port=tls.address[1], netns=host.namespace) as cap:
        ada = host.call(ChatClient, *tls.address, name="ada", tls=client_context(paths["ca"]))
        ada.say("a secret")
        ada.wait_for(lambda m: m.get("type") == "message")
        ada.close()
        assert cap.wait(lambda ps: conversation(ps).closed and ps[-1].tcp.flags == 0x10)
    conv = conversation(cap.packets)
    assert conv.mode == "tls"
    said = [text for _, _, text in conv.messages()]
    assert said and set(said) == {"TLS (encrypted)"}
    assert not any(b"a secret" in s.packet.payload for s in conv.segments)  # not in any packet, in the clear
