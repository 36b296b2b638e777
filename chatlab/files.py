"""File sharing: sending a file in chunks without stopping the chat.

A file may be megabytes; a frame is at most 64 KiB, and one huge frame
would hold up everything behind it on the connection.  So a file travels
as many small ``file_chunk`` frames, each carrying 32 KiB (base64-encoded
in JSON), with other messages free to pass between them.

The server stores and forwards: it first *pulls* the file from the sender,
one chunk at a time, checks the SHA-256 checksum the sender announced, and
only then offers it to the recipients.  Each recipient that accepts then
pulls it from the server, again one chunk per request.

Why pull, one chunk at a time?  Flow control.  Pushing a whole file into
a connection would queue megabytes in the server's outbox for that client
(and in the sender's own send queue, in front of its chat messages).  When
the receiver asks for each chunk, at most one chunk is ever in flight per
transfer, the outbox stays small, and a chat message waits behind at most
32 KiB.  The cost is one round trip per chunk -- the classic trade-off of
a stop-and-wait protocol, which TCP itself avoids with a sliding window.

``FileStore`` is a component the chat core owns: it holds the transfers,
and its handlers answer the ``file_*`` messages (the core's handler table
names them).  It asks the core, through its ``Services``, to send and to
find people and rooms.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .effects import ClientId
from .errors import ProtocolError
from .limits import Limits
from .protocol import TOO_LARGE, clean_text
from .rooms import Room
from .session import Client, Out, Services

log = logging.getLogger("chatlab.core")

CHUNK = 32 * 1024  # bytes of file data in one file_chunk frame (base64 makes it ~43.7 KB)
SHA256_HEX = re.compile(r"[0-9a-f]{64}")

UNKNOWN_FILE = "unknown_file"  # no such transfer, or not one you may touch
BAD_FILE = "bad_file"  # a bad name, size, checksum field or chunk
BAD_CHECKSUM = "bad_checksum"  # the data does not match the SHA-256 announced


@dataclass(eq=False)
class Transfer:
    id: str
    sender: Client  # who offered it
    name: str
    size: int
    sha256: str
    to: Client | None  # for a file to one person
    room: Room | None  # for a file to a room
    created: float
    data: bytearray = field(default_factory=bytearray)
    received: int = 0  # chunks uploaded so far
    active: float = 0.0  # when its last chunk arrived (or it was offered); once complete, when it was
    offered_to: set[ClientId] = field(default_factory=set)  # client ids that were offered it

    @property
    def complete(self) -> bool:
        return self.received == self.chunks  # counted in chunks: an empty file still has one

    @property
    def chunks(self) -> int:
        return max(1, -(-self.size // CHUNK))  # ceiling division; an empty file is one empty chunk

    def chunk(self, seq: int) -> str:
        return base64.b64encode(self.data[seq * CHUNK : (seq + 1) * CHUNK]).decode("ascii")


#: The longest file name, in bytes of UTF-8: what common file systems take
#: (ext4, APFS, NTFS's 255 UTF-16 units are at least as many).  Counted in
#: bytes, not characters: 200 x "é" is 204 characters but 404 bytes.
MAX_FILE_NAME = 255


def safe_file_name(name: str) -> str:
    """Only the last part of a path, cleaned: a file name must never climb directories."""
    name = clean_text(name).replace("\\", "/").rsplit("/", 1)[-1].strip()
    if name in ("", ".", "..") or len(name.encode("utf-8")) > MAX_FILE_NAME:
        raise ProtocolError(BAD_FILE, f"a file needs a name of 1 to {MAX_FILE_NAME} bytes (in UTF-8)")
    return name


Handler = Callable[[Client, dict[str, Any], float, Out], None]


class FileStore:
    """The files being shared, and the handlers of the ``file_*`` messages."""

    def __init__(self, limits: Limits, chat: Services):
        self.limits, self.chat = limits, chat
        self.transfers: dict[str, Transfer] = {}
        self._ids = itertools.count(1)  # file ids, per server: "f1", "f2", ...
        self.handlers: dict[str, Handler] = {
            "file_offer": self.on_offer,
            "file_chunk": self.on_chunk,
            "file_accept": self.on_accept,
            "file_decline": self.on_decline,
            "file_get": self.on_get,
        }

    def _transfer(self, msg: dict[str, Any]) -> Transfer:
        transfer = self.transfers.get(msg["file"])
        if transfer is None:
            raise ProtocolError(UNKNOWN_FILE, f"no file {msg['file'][:20]!r} (it may have expired)")
        return transfer

    @property
    def held(self) -> int:
        """Bytes of file data the server really holds (an offer reserves nothing until its chunks come)."""
        return sum(len(t.data) for t in self.transfers.values())

    def on_offer(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        self.chat.require_registered(client)
        limits = self.limits
        size = msg["size"]
        if size < 0 or not SHA256_HEX.fullmatch(msg["sha256"]):
            raise ProtocolError(BAD_FILE, "a file offer needs a size >= 0 and a SHA-256 as 64 lowercase hex digits")
        if limits.max_file_bytes and size > limits.max_file_bytes:
            raise ProtocolError(TOO_LARGE, f"files are limited to {limits.max_file_bytes} bytes")
        # Each sender's share: a few uploads at a time, and offers that add up
        # to at most a quarter of the store -- so that no one, by offering and
        # never sending, keeps the others from sharing (security.md 2.5b).
        mine = [t for t in self.transfers.values() if t.sender is client]
        uploading = sum(1 for t in mine if not t.complete)
        if limits.uploads_per_user and uploading >= limits.uploads_per_user:
            raise ProtocolError(TOO_LARGE, f"you have {uploading} uploads unfinished, the most allowed; "
                                           "finish one first")
        share = max(limits.max_file_bytes, limits.file_store_bytes // 4)
        if limits.file_store_bytes and sum(t.size for t in mine) + size > share:
            raise ProtocolError(TOO_LARGE, f"your files on the server would pass your share of {share} bytes; "
                                           "wait for some to expire")
        if limits.file_store_bytes and self.held >= limits.file_store_bytes:
            raise ProtocolError(TOO_LARGE, "the server is holding too many files; try again later")
        to = room = None
        if msg.get("to"):
            to = self.chat.user(msg["to"])
        else:
            room = self.chat.member_room(client, msg.get("room"))
        transfer = Transfer(f"f{next(self._ids)}", client, safe_file_name(msg["name"]), size,
                            msg["sha256"], to, room, now, active=now)
        self.transfers[transfer.id] = transfer
        log.info("%s offers file %s (%s, %d bytes)", client.name, transfer.id, transfer.name, transfer.size)
        self._pull_upload(transfer, out)

    def _pull_upload(self, transfer: Transfer, out: Out) -> None:
        """Ask the sender for the next chunk, or, once all is in, check it and offer it."""
        if not transfer.complete:
            seq = transfer.received
            self.chat.asked(transfer.sender)  # its file_chunk answers this, and costs no token
            self.chat.send(transfer.sender, {"type": "file_upload", "file": transfer.id, "seq": seq,
                                             "sha256": transfer.sha256}, out)
            return
        if hashlib.sha256(transfer.data).hexdigest() != transfer.sha256:
            del self.transfers[transfer.id]
            raise ProtocolError(BAD_CHECKSUM, f"file {transfer.id}: the data does not match its SHA-256")
        offer = {"type": "file_offer", "file": transfer.id, "from": transfer.sender.name, "name": transfer.name,
                 "size": transfer.size, "sha256": transfer.sha256}
        if transfer.to is not None:
            recipients = [transfer.to]
            offer["to"] = transfer.to.name
        else:
            assert transfer.room is not None
            recipients = [m for m in transfer.room.members.values() if m is not transfer.sender]
            offer["room"] = transfer.room.name
        for recipient in recipients:
            transfer.offered_to.add(recipient.id)
            self.chat.send(recipient, offer, out)
        self.chat.send(transfer.sender, {"type": "file_sent", "file": transfer.id,
                                         "recipients": [r.name for r in recipients]}, out)

    def on_chunk(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        transfer = self._transfer(msg)
        expected = transfer.received
        if transfer.sender is not client or transfer.complete or msg["seq"] != expected:
            raise ProtocolError(BAD_FILE, f"file {transfer.id}: expected chunk {expected} from its sender")
        try:
            data = base64.b64decode(msg["data"], validate=True)
        except binascii.Error:
            raise ProtocolError(BAD_FILE, f"file {transfer.id}: chunk {expected} is not base64") from None
        if len(data) != min(CHUNK, transfer.size - len(transfer.data)):
            del self.transfers[transfer.id]
            raise ProtocolError(BAD_FILE, f"file {transfer.id}: chunk {expected} has the wrong size")
        store = self.limits.file_store_bytes
        if store and self.held + len(data) > store:
            # Offers reserve nothing, so the store can fill while this one uploads: it is dropped, not kept half.
            del self.transfers[transfer.id]
            raise ProtocolError(TOO_LARGE, f"file {transfer.id}: the server's file store is full; upload dropped, "
                                           "try again later")
        transfer.data += data
        transfer.received += 1
        transfer.active = now
        self._pull_upload(transfer, out)

    def _offered(self, client: Client, msg: dict[str, Any]) -> Transfer:
        transfer = self._transfer(msg)
        if client.id not in transfer.offered_to:
            raise ProtocolError(UNKNOWN_FILE, f"file {transfer.id} was not offered to you")
        return transfer

    def on_accept(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        transfer = self._offered(client, msg)
        if transfer.sender.id in self.chat.clients:
            self.chat.send(transfer.sender, {"type": "file_accepted", "file": transfer.id, "by": client.name}, out)
        self.on_get(client, {"file": transfer.id, "seq": 0}, now, out)

    def on_get(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        transfer = self._offered(client, msg)
        seq = msg["seq"]
        if not 0 <= seq < transfer.chunks:
            raise ProtocolError(BAD_FILE, f"file {transfer.id} has chunks 0 to {transfer.chunks - 1}")
        last = seq == transfer.chunks - 1
        if not last:
            self.chat.asked(client)  # its file_get for the next chunk costs no token
        self.chat.send(client, {"type": "file_chunk", "file": transfer.id, "seq": seq, "data": transfer.chunk(seq),
                                "last": last}, out)

    def on_decline(self, client: Client, msg: dict[str, Any], now: float, out: Out) -> None:
        transfer = self._offered(client, msg)
        transfer.offered_to.discard(client.id)
        if transfer.sender.id in self.chat.clients:
            self.chat.send(transfer.sender, {"type": "file_declined", "file": transfer.id, "by": client.name}, out)

    def expire(self, now: float, client: Client | None = None, out: Out | None = None) -> None:
        """Forget files past their time, uploads that stalled, and unfinished uploads of a client who left.

        A complete file lives ``file_ttl`` from when it was complete; an
        upload lives ``upload_timeout`` from its last chunk (or its offer).
        """
        limits = self.limits
        for fid, transfer in list(self.transfers.items()):
            quiet = now - transfer.active
            old = transfer.complete and limits.file_ttl and quiet > limits.file_ttl
            stalled = not transfer.complete and limits.upload_timeout and quiet > limits.upload_timeout
            abandoned = transfer.sender is client and not transfer.complete
            if old or stalled or abandoned:
                del self.transfers[fid]
                why = "expired" if old else "sender left" if abandoned else "upload stalled"
                log.info("file %s forgotten (%s)", fid, why)
                if stalled and out is not None and transfer.sender.id in self.chat.clients:
                    self.chat.error(transfer.sender, BAD_FILE, f"file {fid}: no chunk for {limits.upload_timeout:g} "
                                                               "seconds; the upload was dropped", out)

    def clear(self) -> None:
        self.transfers.clear()
