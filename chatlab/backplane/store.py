"""The Redis side of a shared chat: the keys, the scripts, and the two threads that talk to Redis.

Everything several chatlab servers ("nodes") must agree on lives in one
Redis, under the prefix ``chatlab:`` (docs/scaling.md draws it):

==============================  =======  =================================================
key                             type     what it holds
==============================  =======  =================================================
``chatlab:ids``                 string   INCR: the last message id given, for every room
``chatlab:joins``               string   INCR: orders names and members by when they came
``chatlab:epoch``               string   a token set once: a new one means Redis lost its data
``chatlab:names``               hash     name key -> {"name", "node", "seq"}: who holds a name
``chatlab:rooms``               hash     room key -> room name, for rooms with members
``chatlab:members:ROOM``        hash     name key -> {"name", "node", "seq", "quiet"}
``chatlab:room:ROOM``           stream   the room's messages and its joined/left notices
``chatlab:inbox:NODE``          stream   private messages for the users on that node
``chatlab:nodes``               set      the nodes that are, or were until reaped, alive
``chatlab:node:NODE``           string   the heartbeat: set every second, gone after 5
``chatlab:node:NODE:names``     set      the name keys that node holds
``chatlab:node:NODE:rooms``     hash     "ROOM<tab>NAME KEY" -> "room name<tab>name"
==============================  =======  =================================================

Why a stream per room, and not pub/sub?  PUBLISH hands a message to the
subscribers connected at that moment and forgets it: a node that was
disconnected for a second (or paused) never hears what was said meanwhile.
A stream keeps its entries; each node reads on from the last entry id it
saw (XREAD), so a node that fell behind catches up.  And a stream gives one
order: every node reads the same entries in the same order.

Message ids stay integers on the wire: a script INCRs ``chatlab:ids`` and
adds the message to the room's stream *with that number as its entry id*
(``N-0``), in one atomic step -- so the order of ids is the order of the
stream.  A notice (joined, left) takes the next free id after the current
number (``N-*``: ``N-1``, ``N-2``...), so it falls in place without using a
message id.  Streams are capped (``XADD MAXLEN ~``) like the in-memory
history.

Every change is a Lua script: Redis runs a script whole, with nothing else
in between, so "is this name free? then it is mine" cannot be split by a
node on the other side of the room.  (Keys are built inside the scripts,
which a Redis Cluster would refuse: one Redis is the design.)

Threads: a *reader* blocks in XREAD on the streams of the rooms this node
has members in (and its inbox), and hands what it reads to ``on_entries``;
a *heartbeat* renews ``chatlab:node:NODE`` every second, reaps nodes whose
heartbeat has expired (their users are announced as left, their names
freed), and, when Redis is unreachable, tries again until it is back.
Everything else is called from ``Work`` jobs, on the server's worker
threads, never on the chat's.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from typing import Any, Callable, Iterable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..history import MEMORY_KEEP
from . import Unavailable

log = logging.getLogger("chatlab.backplane")

PREFIX = "chatlab:"
HEARTBEAT = 1.0  # seconds between a node's heartbeats (and its checks on the others)
NODE_TTL = 5  # seconds a heartbeat lasts: a node silent for longer is dead, and reaped
READ_BLOCK = 1.0  # seconds the reader waits in one XREAD (a join wakes it sooner)
READ_COUNT = 1000  # entries one XREAD may return per stream: a node far behind catches up in big bites
KEEP = MEMORY_KEEP  # entries a room's stream keeps (XADD MAXLEN ~), like the in-memory history
COMMAND_TIMEOUT = 2.0  # seconds before a Redis command counts as failed (Redis is down, or stopped)
CONNECT_TIMEOUT = 1.0
RETRY_MAX = 2.0  # seconds: the longest wait between two tries to reach a Redis that went away
LOBBY = "lobby"  # the room every name is in (rooms.DEFAULT_ROOM's key)

StreamId = tuple[int, int]


def parse_id(text: str) -> StreamId:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


# ------------------------------------------------------------- the scripts
#
# ARGV[1] is the key prefix, ARGV[2] this node's id, ARGV[3] the streams'
# MAXLEN, ARGV[4] "1" to PUBLISH each entry too (the pub/sub mode); the
# rest are the script's own.  A notice's field "here" is "0" when the node
# that wrote it must not show it to its own clients (a reaped node's users
# "leaving", then coming back): they never left.

PRELUDE = r"""
local P, node, maxlen, pub = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local function alive(n) return redis.call('EXISTS', P .. 'node:' .. n) == 1 end
local function publish(channel, fields)
  if pub == '1' then redis.call('PUBLISH', channel, cjson.encode(fields)) end
end
local function notice(room, kind, origin, key, name, reason, quiet, here, text)
  text = text or ''  -- a leaver's farewell ("see you tomorrow"); none for a join or a reaped node
  local n = redis.call('GET', P .. 'ids') or '0'
  local stream = P .. 'room:' .. room
  local sid = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, n .. '-*', 'kind', kind, 'node', origin,
                         'key', key, 'name', name, 'reason', reason, 'quiet', quiet, 'here', here, 'text', text)
  publish(stream, {sid=sid, kind=kind, node=origin, key=key, name=name, reason=reason, quiet=quiet, here=here,
                   text=text})
  return sid
end
"""

HELLO = PRELUDE + r"""
-- A node (re)connects: the epoch tells it whether Redis kept its data;
-- ids never go back below what the node has already seen.
redis.call('SET', P .. 'epoch', ARGV[5], 'NX')
local ids = tonumber(redis.call('GET', P .. 'ids') or '0')
if ids < tonumber(ARGV[6]) then
  redis.call('SET', P .. 'ids', ARGV[6])
  ids = tonumber(ARGV[6])
end
return {redis.call('GET', P .. 'epoch'), tostring(ids)}
"""

HEARTBEAT_SCRIPT = PRELUDE + r"""
-- I am alive for another TTL seconds; which of the others are not?
local was = redis.call('SISMEMBER', P .. 'nodes', node)
redis.call('SET', P .. 'node:' .. node, '1', 'EX', ARGV[5])
redis.call('SADD', P .. 'nodes', node)
local dead = {}
for _, other in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  if other ~= node and not alive(other) then table.insert(dead, other) end
end
return {was, dead}
"""

CLAIM = PRELUDE + r"""
-- Take a name, unless a live node holds it: two nodes racing for one name, one wins.
local key, name = ARGV[5], ARGV[6]
local held = redis.call('HGET', P .. 'names', key)
if held then
  local owner = cjson.decode(held).node
  if owner ~= node and alive(owner) then return {0, owner} end
end
local seq = redis.call('INCR', P .. 'joins')
redis.call('HSET', P .. 'names', key, cjson.encode({name=name, node=node, seq=seq}))
redis.call('SADD', P .. 'node:' .. node .. ':names', key)
return {1, seq}
"""

JOIN = PRELUDE + r"""
-- A member joins a room: noted, announced in the room's stream (unless the
-- room is large: then quietly), and the members as they are at that entry.
local room, roomname, key, name, large, here = ARGV[5], ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10]
local members = P .. 'members:' .. room
local quiet = '0'
if large > 0 and redis.call('HLEN', members) >= large then quiet = '1' end
local seq = redis.call('INCR', P .. 'joins')
redis.call('HSET', members, key, cjson.encode({name=name, node=node, seq=seq, quiet=quiet}))
redis.call('HSETNX', P .. 'rooms', room, roomname)  -- the room keeps the name its first member gave it
roomname = redis.call('HGET', P .. 'rooms', room)
redis.call('HSET', P .. 'node:' .. node .. ':rooms', room .. '\t' .. key, roomname .. '\t' .. name)
local sid = notice(room, 'joined', node, key, name, '', quiet, here)
return {sid, quiet, redis.call('HVALS', members), roomname}
"""

LEAVE = PRELUDE + r"""
local room, key, name, reason, quiet, text = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local members = P .. 'members:' .. room
local held = redis.call('HGET', members, key)
redis.call('HDEL', P .. 'node:' .. node .. ':rooms', room .. '\t' .. key)
if not held or cjson.decode(held).node ~= node then return '' end  -- not ours (reaped, and taken since)
redis.call('HDEL', members, key)
if room ~= 'lobby' and redis.call('HLEN', members) == 0 then redis.call('HDEL', P .. 'rooms', room) end
return notice(room, 'left', node, key, name, reason, quiet, '1', text)
"""

RELEASE = PRELUDE + r"""
local key = ARGV[5]
local held = redis.call('HGET', P .. 'names', key)
if held and cjson.decode(held).node == node then redis.call('HDEL', P .. 'names', key) end
redis.call('SREM', P .. 'node:' .. node .. ':names', key)
return 1
"""

SAY = PRELUDE + r"""
-- The next id, and the message in the room's stream under that very id.
local room, from, key, text, ts, announce = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local stream = P .. 'room:' .. room
if announce == '1' then  -- a quiet member of a large room speaks: announced first
  local members = P .. 'members:' .. room
  local held = redis.call('HGET', members, key)
  if held then
    local member = cjson.decode(held)
    member.quiet = '0'
    redis.call('HSET', members, key, cjson.encode(member))
  end
  notice(room, 'joined', node, key, from, '', '0', '1')
end
local id = redis.call('INCR', P .. 'ids')
local sid = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, id .. '-0', 'kind', 'message', 'node', node,
                       'from', from, 'text', text, 'ts', ts)
publish(stream, {sid=sid, kind='message', node=node, from=from, text=text, ts=ts})
return id
"""

DM = PRELUDE + r"""
-- A private message: to the inbox of the node its recipient is on (and the sender's, for its copy).
local tokey, from, text, ts = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local held = redis.call('HGET', P .. 'names', tokey)
if not held then return {0, ''} end
local target = cjson.decode(held)
if target.node ~= node and not alive(target.node) then return {0, ''} end
local id = redis.call('INCR', P .. 'ids')
local inboxes = {target.node}
if target.node ~= node then table.insert(inboxes, node) end
for _, where in ipairs(inboxes) do
  local stream = P .. 'inbox:' .. where
  local sid = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'kind', 'dm', 'id', id, 'from', from,
                         'to', target.name, 'text', text, 'ts', ts)
  publish(stream, {sid=sid, kind='dm', id=tostring(id), from=from, to=target.name, text=text, ts=ts})
end
return {id, target.name}
"""

REAP = PRELUDE + r"""
-- A node is dead (its heartbeat expired), or is retiring: announce its
-- users as left in every room they were in, and free their names.  Only
-- one reaper does it: the first removes the node from the set.
local dead, reason, force = ARGV[5], ARGV[6], ARGV[7]
if redis.call('SISMEMBER', P .. 'nodes', dead) == 0 then return -1 end
if force ~= '1' and alive(dead) then return -1 end
local rooms = redis.call('HGETALL', P .. 'node:' .. dead .. ':rooms')
for i = 1, #rooms, 2 do
  local room, key = string.match(rooms[i], '^(.*)\t(.*)$')
  local name = string.match(rooms[i + 1], '\t(.*)$')
  local members = P .. 'members:' .. room
  local held = redis.call('HGET', members, key)
  if held then
    local member = cjson.decode(held)
    if member.node == dead then
      redis.call('HDEL', members, key)
      if room ~= 'lobby' and redis.call('HLEN', members) == 0 then redis.call('HDEL', P .. 'rooms', room) end
      notice(room, 'left', dead, key, name, reason, member.quiet or '0', '0')
    end
  end
end
local names = redis.call('SMEMBERS', P .. 'node:' .. dead .. ':names')
for _, key in ipairs(names) do
  local held = redis.call('HGET', P .. 'names', key)
  if held and cjson.decode(held).node == dead then redis.call('HDEL', P .. 'names', key) end
end
redis.call('DEL', P .. 'node:' .. dead .. ':rooms', P .. 'node:' .. dead .. ':names', P .. 'inbox:' .. dead)
if force == '1' then redis.call('DEL', P .. 'node:' .. dead) end
redis.call('SREM', P .. 'nodes', dead)
return #names
"""


class RedisStore:
    """One node's connection to the shared chat in Redis.

    ``mode="streams"`` (the design) delivers from the rooms' streams;
    ``mode="pubsub"`` from PUBLISH/SUBSCRIBE, with the same streams kept for
    history only -- the broken design, for the lesson of notebook 14.
    """

    def __init__(self, url: str, mode: str = "streams", prefix: str = PREFIX, keep: int = KEEP,
                 ttl: int = NODE_TTL, heartbeat: float = HEARTBEAT):
        if mode not in ("streams", "pubsub"):
            raise ValueError("the backplane's mode is 'streams' or 'pubsub'")
        self.url, self.mode, self.prefix, self.keep = url, mode, prefix, keep
        self.ttl, self.heartbeat = ttl, heartbeat
        self.node = secrets.token_hex(4)  # this server's id, new at every start
        options: dict[str, Any] = {"decode_responses": True, "socket_timeout": COMMAND_TIMEOUT,
                                   "socket_connect_timeout": CONNECT_TIMEOUT, "retry": Retry(NoBackoff(), 0)}
        # Commands from Work jobs and the heartbeat share a pool (redis-py's is thread-safe).
        # No retries: a script retried after a lost answer would say a message twice.
        self.redis: Any = redis.Redis.from_url(url, **options)
        # The reader has a connection of its own (made by connect()): it spends its life blocked in XREAD.
        self._reader_options = {**options, "socket_timeout": READ_BLOCK + COMMAND_TIMEOUT}
        self._reader: Any = None
        self._scripts = {name: self.redis.register_script(text) for name, text in (
            ("hello", HELLO), ("heartbeat", HEARTBEAT_SCRIPT), ("claim", CLAIM), ("join", JOIN), ("leave", LEAVE),
            ("release", RELEASE), ("say", SAY), ("dm", DM), ("reap", REAP))}
        self._lock = threading.Lock()  # guards what follows (the chat's thread, Work jobs, the two threads)
        self._cursors: dict[str, StreamId] = {}  # room key -> the last entry read of its stream
        self._inbox: StreamId = (0, 0)
        # What this node has in Redis, kept here too: when Redis lost it (a
        # restart without persistence) or the others reaped us (we were
        # paused past our heartbeat), it is written back.
        self.names: dict[str, str] = {}  # name key -> name
        self.rooms: dict[tuple[str, str], tuple[str, str]] = {}  # (room key, name key) -> (room name, name)
        self.pending: list[Callable[[], Any]] = []  # departures Redis did not hear of: retried when it is back
        self.epoch = ""
        self._reset = False  # the epoch changed: the cores must forget how far they had read
        self._grace = 0.0  # (monotonic) no reaping before this: after an outage, give the others time to beat
        self.last_id = 0  # the highest message id seen
        self.available = False
        self.counts = {"outages": 0, "reaped": 0, "reasserted": 0, "read": 0}
        self._up = threading.Event()
        self._stopping = threading.Event()
        self._reader_id: int | None = None
        self._threads: list[threading.Thread] = []
        self.on_entries: Callable[[str, list[tuple[StreamId, dict[str, str]]]], None] = lambda where, entries: None
        self.on_state: Callable[[bool, str], None] = lambda up, why: None
        self.on_lost: Callable[[list[str]], None] = lambda keys: None

    # ------------------------------------------------------------ keys

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def room_stream(self, room: str) -> str:
        return self.key("room", room)

    # --------------------------------------------------------- life cycle

    def connect(self) -> None:
        """Reach Redis once, at start (on the starting thread): a clear error if it is not there."""
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise Unavailable(f"cannot reach Redis at {self.url}: {str(exc).rstrip('.')}. Is redis-server running there?") from None
        # Named, so that CLIENT LIST shows which node each reading connection is (a test kills one by name).
        self._reader = redis.Redis.from_url(self.url, single_connection_client=True,
                                            client_name=f"chatlab-reader-{self.node}", **self._reader_options)
        self._hello()
        self.available = True
        self._beat()  # alive from the start: others may look our users up at once
        self._up.set()

    def run(self) -> None:
        """Start the reader and the heartbeat (after ``on_*`` are set)."""
        for target, name in ((self._read_loop, "reader"), (self._heartbeat_loop, "heartbeat")):
            thread = threading.Thread(target=target, name=f"chatlab-redis-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop both threads; retire this node: its users leave their rooms, its names are freed."""
        self._stopping.set()
        self._up.set()
        self.wake_reader()
        for thread in self._threads:
            thread.join(timeout)
        try:
            self._script("reap", self.node, "shutdown", "1")
        except (redis.RedisError, Unavailable):
            log.warning("could not retire node %s from Redis: the others will reap it in %d s", self.node, self.ttl)
        self.redis.close()
        if self._reader is not None:
            self._reader.close()

    # -------------------------------------------------------- the scripts

    def _script(self, name: str, *args: Any, client: Any = None) -> Any:
        if not self.available and name not in ("hello", "heartbeat", "reap", "claim", "join"):
            raise Unavailable("Redis is unreachable")
        argv = [self.prefix, self.node, self.keep, "1" if self.mode == "pubsub" else "0", *args]
        try:
            return self._scripts[name](args=argv, client=client)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._down(f"{exc}")
            raise Unavailable(f"Redis is unreachable: {exc}") from None

    def _hello(self) -> None:
        """The epoch, and ids that never go back; after Redis lost its data, our state is written back."""
        epoch, ids = self._script("hello", secrets.token_hex(8), self.last_id)
        self.last_id = max(self.last_id, int(ids))
        if self.epoch and epoch != self.epoch:
            log.warning("Redis lost its data (a new epoch): reading every stream from its start, "
                        "and writing back this node's names and rooms")
            with self._lock:
                self._cursors = {room: (0, 0) for room in self._cursors}
                self._inbox = (0, 0)
            self._reset = True
        self.epoch = epoch

    # ----------------------------------------- called from Work jobs

    def claim(self, key: str, name: str) -> bool:
        won, _ = self._script("claim", key, name)
        if won:
            with self._lock:
                self.names[key] = name
        return bool(won)

    def join(self, room: str, roomname: str, key: str, name: str, large: int, recent: int,
             here: bool = True) -> tuple[StreamId, bool, list[dict[str, Any]], list[dict[str, Any]], str]:
        """Join: the entry id of the join, whether quiet, the members (``name``, ``quiet``: in join order),
        the room's history before the join, and the room's name (as its first member spelt it)."""
        sid, quiet, members, roomname = self._script("join", room, roomname, key, name, large, "1" if here else "0")
        with self._lock:
            self.rooms[(room, key)] = (roomname, name)
        at = parse_id(sid)
        ordered = sorted((json.loads(m) for m in members), key=lambda m: m["seq"])
        history = self.history(room, roomname, recent, end=at) if recent else []
        return at, quiet == "1", ordered, history, roomname

    def leave(self, room: str, key: str, name: str, reason: str, quiet: bool, text: str | None = None) -> None:
        """Out of one room; ``text`` is the leaver's farewell, carried by its ``left``."""
        with self._lock:
            self.rooms.pop((room, key), None)
        self._script("leave", room, key, name, reason, "1" if quiet else "0", text or "")

    def depart(self, key: str, name: str, rooms: list[tuple[str, bool]], reason: str,
               text: str | None = None) -> None:
        """A user went away: out of each of its rooms (with the room's ``quiet`` flag), and its name freed."""
        with self._lock:
            for room, _ in rooms:
                self.rooms.pop((room, key), None)
            self.names.pop(key, None)

        def tell() -> None:
            pipe = self.redis.pipeline(transaction=False)
            for room, quiet in rooms:
                self._script("leave", room, key, name, reason, "1" if quiet else "0", text or "", client=pipe)
            self._script("release", key, client=pipe)
            try:
                pipe.execute()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._down(f"{exc}")
                raise Unavailable(f"{exc}") from None

        try:
            tell()
        except Unavailable:
            with self._lock:  # told when Redis is back: nobody may keep a name whose owner left
                self.pending.append(tell)
            raise

    def say(self, room: str, name: str, key: str, text: str, ts: float, announce: bool) -> int:
        message_id = int(self._script("say", room, name, key, text, repr(ts), "1" if announce else "0"))
        with self._lock:
            self.last_id = max(self.last_id, message_id)
        return message_id

    def say_many(self, messages: list[tuple[str, str, str, str, float, bool]]) -> list[int | Exception]:
        """Several SAYs in one round trip (a pipeline), in order: each one's id, or the error it met.

        Under load, what the clients of a node said while the last batch
        was being written goes as one batch: one round trip for all of them.
        """
        if not self.available:
            raise Unavailable("Redis is unreachable")
        pipe = self.redis.pipeline(transaction=False)
        for room, name, key, text, ts, announce in messages:
            self._script("say", room, name, key, text, repr(ts), "1" if announce else "0", client=pipe)
        try:
            results = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._down(f"{exc}")
            raise Unavailable(f"Redis is unreachable: {exc}") from None
        ids = [r if isinstance(r, Exception) else int(r) for r in results]
        with self._lock:
            self.last_id = max([self.last_id, *(i for i in ids if isinstance(i, int))])
        return ids

    def dm(self, to_key: str, name: str, text: str, ts: float) -> tuple[int, str] | None:
        """A private message: (its id, the recipient's name), or None if nobody has that name."""
        message_id, to = self._script("dm", to_key, name, text, repr(ts))
        return (int(message_id), to) if message_id else None

    def users(self) -> list[str]:
        """Every registered name on every live node, in the order they registered."""
        held = [json.loads(v) for v in self._query(lambda r: r.hgetall(self.key("names"))).values()]
        live = self._live({h["node"] for h in held})
        return [h["name"] for h in sorted(held, key=lambda h: h["seq"]) if h["node"] in live]

    def lookup(self, key: str) -> str | None:
        """The node that holds a name (None: nobody does)."""
        held = self._query(lambda r: r.hget(self.key("names"), key))
        if held is None:
            return None
        node = json.loads(held)["node"]
        return node if node in self._live({node}) else None

    def members(self, room: str) -> list[str] | None:
        """A room's members on every node, in join order (None: no such room)."""
        def ask(r: Any) -> tuple[Any, Any]:
            return r.hget(self.key("rooms"), room), r.hvals(self.key("members", room))

        name, members = self._query(ask)
        if name is None and not members:
            return None
        return [m["name"] for m in sorted((json.loads(v) for v in members), key=lambda m: m["seq"])]

    def room_list(self) -> list[dict[str, Any]]:
        """Every room with members, on every node, sorted by key (``key``, ``name``, ``members``)."""
        def ask(r: Any) -> list[dict[str, Any]]:
            rooms = r.hgetall(self.key("rooms"))
            listing = []
            for key in sorted(rooms):
                members = sorted((json.loads(v) for v in r.hvals(self.key("members", key))), key=lambda m: m["seq"])
                listing.append({"key": key, "name": rooms[key], "members": [m["name"] for m in members]})
            return listing

        listing: list[dict[str, Any]] = self._query(ask)
        return listing

    def history(self, room: str, roomname: str, limit: int, before: int | None = None, since: int | None = None,
                end: StreamId | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` messages of a room, oldest first: the newest (before id ``before``, or entry
        ``end``), or, with ``since``, the oldest after that id."""
        if limit <= 0:
            return []
        stream = self.room_stream(room)
        found: list[dict[str, Any]] = []
        if since is not None:
            start = f"{since + 1}-0" if since >= 0 else "-"
            while len(found) < limit:
                entries = self._query(lambda r: r.xrange(stream, start, "+", count=max(limit * 2, 50)))
                if not entries:
                    break
                found += [self.message(sid, f, roomname) for sid, f in entries if f.get("kind") == "message"]
                start = "(" + entries[-1][0]
            return found[:limit]
        top = "(" + format_id(end) if end is not None else "+" if before is None else f"({max(0, before)}-0"
        while len(found) < limit:
            entries = self._query(lambda r: r.xrevrange(stream, top, "-", count=max(limit * 2, 50)))
            if not entries:
                break
            found += [self.message(sid, f, roomname) for sid, f in entries if f.get("kind") == "message"]
            top = "(" + entries[-1][0]
        return found[:limit][::-1]

    @staticmethod
    def message(sid: str, fields: dict[str, str], roomname: str) -> dict[str, Any]:
        """A room's stream entry as the ``message`` clients know (its id is the entry id's first number)."""
        return {"type": "message", "id": int(sid.partition("-")[0]), "ts": float(fields["ts"]),
                "from": fields["from"], "text": fields["text"], "room": roomname}

    def _query(self, ask: Callable[[Any], Any]) -> Any:
        if not self.available:
            raise Unavailable("Redis is unreachable")
        try:
            return ask(self.redis)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._down(f"{exc}")
            raise Unavailable(f"Redis is unreachable: {exc}") from None

    def _live(self, nodes: Iterable[str]) -> set[str]:
        """Which of these nodes still beat."""
        nodes = list(nodes)

        def ask(r: Any) -> list[int]:
            pipe = r.pipeline(transaction=False)
            for node in nodes:
                pipe.exists(self.key("node", node))
            flags: list[int] = pipe.execute()
            return flags

        return {n for n, up in zip(nodes, self._query(ask) if nodes else []) if up}

    # ------------------------------------- called on the chat's thread (no I/O)

    def follow(self, room: str, after: StreamId) -> bool:
        """Read a room's stream from just after ``after``; True if it was not read before (wake the reader)."""
        with self._lock:
            if room in self._cursors:
                return False
            self._cursors[room] = after
            return True

    def unfollow(self, room: str) -> None:
        with self._lock:
            self._cursors.pop(room, None)

    def wake_reader(self) -> None:
        """Interrupt the reader's XREAD, so that it reads a room just followed (a Work job: this is I/O)."""
        if self.mode == "pubsub":
            try:
                self.redis.publish(self.key("wake", self.node), "1")
            except redis.RedisError:
                pass
            return
        reader = self._reader_id
        if reader is not None:
            try:
                self.redis.client_unblock(reader)
            except redis.RedisError:
                pass

    # --------------------------------------------------------- availability

    def _down(self, why: str) -> None:
        with self._lock:
            was, self.available = self.available, False
        if was and not self._stopping.is_set():
            self.counts["outages"] += 1
            self._up.clear()
            log.error("Redis at %s is unreachable (%s): messages cannot be sent until it is back", self.url, why)
            self.on_state(False, why)

    def _recover(self) -> bool:
        """Redis answers again: say hello, write back what it lost, retry the departures it missed."""
        try:
            self.redis.ping()
            self._hello()
            self.available = True
            # Every node's heartbeat may have run out while Redis was away:
            # wait one TTL for the others to beat again before reaping any.
            self._grace = time.monotonic() + self.ttl
            self._beat()
            with self._lock:
                pending, self.pending = self.pending, []
            for tell in pending:
                tell()
        except (redis.RedisError, Unavailable) as exc:
            self.available = False
            log.debug("Redis still unreachable: %s", exc)
            return False
        log.warning("Redis at %s is back: carrying on", self.url)
        # The core hears of it before the reader reads anything more (both go through post).
        reset, self._reset = self._reset, False
        self.on_state(True, "reset" if reset else "back")
        self._up.set()
        return True

    # ------------------------------------------------------------ heartbeat

    def _heartbeat_loop(self) -> None:
        wait = self.heartbeat
        while not self._stopping.wait(wait):
            if self.available:
                try:
                    self._beat()
                except (redis.RedisError, Unavailable) as exc:
                    self._down(f"{exc}")
                wait = self.heartbeat
            elif self._recover():
                wait = self.heartbeat
            else:
                wait = min(RETRY_MAX, max(0.05, wait * 2) if wait < self.heartbeat else 0.1)

    def _beat(self) -> None:
        was, dead = self._script("heartbeat", self.ttl)
        for other in dead if time.monotonic() >= self._grace else ():
            if self._script("reap", other, "server_lost", "0") >= 0:
                self.counts["reaped"] += 1
                log.warning("node %s stopped beating: its users are announced as left, their names freed", other)
        if not was:
            self._reassert()

    def _reassert(self) -> None:
        """We were not in the set of nodes: reaped while we were paused, or Redis lost its data."""
        with self._lock:
            names, rooms = dict(self.names), dict(self.rooms)
        if not names and not rooms:
            return
        self.counts["reasserted"] += 1
        log.warning("this node (%s) was given up for dead, or Redis lost its data: writing back %d names",
                    self.node, len(names))
        lost = [key for key, name in names.items() if not self._script("claim", key, name)[0]]
        with self._lock:
            for key in lost:
                self.names.pop(key, None)
        for (room, key), (roomname, name) in rooms.items():
            if key not in lost:
                self._script("join", room, roomname, key, name, 0, "0")
        if lost:
            self.on_lost(lost)

    # --------------------------------------------------------------- reader

    def _read_loop(self) -> None:
        if self.mode == "pubsub":
            self._subscribe_loop()
            return
        while not self._stopping.is_set():
            if not self._up.wait(READ_BLOCK) or self._stopping.is_set():
                continue
            try:
                if self._reader_id is None:
                    self._reader_id = self._reader.client_id()
                with self._lock:
                    streams = {self.key("inbox", self.node): format_id(self._inbox),
                               **{self.room_stream(room): format_id(at) for room, at in self._cursors.items()}}
                reply = self._reader.xread(streams, count=READ_COUNT, block=int(READ_BLOCK * 1000))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._reader_id = None
                self._down(f"{exc}")
                continue
            except redis.RedisError:
                log.exception("reading the streams failed")
                self._stopping.wait(0.1)
                continue
            for stream, entries in reply or []:
                self._hand_over(stream, [(parse_id(sid), fields) for sid, fields in entries])

    def _hand_over(self, stream: str, entries: list[tuple[StreamId, dict[str, str]]]) -> None:
        """Advance the stream's cursor past ``entries`` and give them to the node's core."""
        if not entries:
            return
        last = entries[-1][0]
        inbox = stream == self.key("inbox", self.node)
        room = stream[len(self.key("room", "")):]
        with self._lock:
            if inbox:
                self._inbox = max(self._inbox, last)
            elif room in self._cursors:
                self._cursors[room] = max(self._cursors[room], last)
            else:
                return  # nobody here is in that room any more
            self.counts["read"] += len(entries)
            for sid, fields in entries:
                if fields.get("kind") == "message":
                    self.last_id = max(self.last_id, sid[0])
        self.on_entries("" if inbox else room, entries)

    def _subscribe_loop(self) -> None:
        """Pub/sub: hear what is PUBLISHed while subscribed; anything said while away is gone for good."""
        pubsub: Any = None
        subscribed: set[str] = set()
        while not self._stopping.is_set():
            if not self._up.wait(READ_BLOCK) or self._stopping.is_set():
                continue
            try:
                if pubsub is None:
                    pubsub = self._reader.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.key("wake", self.node), self.key("inbox", self.node))
                    subscribed = set()
                with self._lock:
                    wanted = {self.room_stream(room) for room in self._cursors}
                if wanted - subscribed:
                    pubsub.subscribe(*(wanted - subscribed))
                if subscribed - wanted:
                    pubsub.unsubscribe(*(subscribed - wanted))
                subscribed = wanted
                message = pubsub.get_message(timeout=READ_BLOCK)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._down(f"{exc}")
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except redis.RedisError:
                        pass
                pubsub = None
                continue
            if message is None or message.get("type") != "message" or message["channel"].startswith(self.key("wake")):
                continue
            fields = json.loads(message["data"])
            self._hand_over(message["channel"], [(parse_id(fields.pop("sid")), fields)])

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"node": self.node, "mode": self.mode, "available": self.available, "rooms": len(self._cursors),
                    "last_id": self.last_id, **self.counts}
