"""IRC: the dialect of real IRC clients -- irssi, weechat, HexChat -- after RFC 1459 and RFC 2812.

IRC (1988; RFC 1459 in 1993, RFC 2812 in 2000) is the chat protocol the
internet actually ran on.  Like chatlab's lines mode it is text lines, but
every line is a *command* with parameters::

    [:prefix] COMMAND param param ... [:trailing parameter, spaces allowed]

and the server answers most commands with *numeric replies*: ``001`` (you
are registered), ``353`` (a channel's names), ``433`` (that nickname is in
use).  A number is for the client program, which reacts to it (picks
another nickname, fills a channel's member list) without reading the text
beside it, which is for people.  A line is at most 512 bytes, CRLF
included: the oldest limit in the protocol, from a time when servers
allocated fixed buffers per client.

This module is the whole of IRC in chatlab.  It turns each IRC command into
the message a frames client would have sent (``NICK`` + ``USER`` become a
``hello``; ``PRIVMSG #room`` a ``say``; ``JOIN`` a ``join``), so the chat
core applies the same rules to IRC users as to everyone; and it turns the
core's messages into IRC lines and numerics.  What IRC needs and chatlab
does not know -- capability negotiation, ``PING``, the message of the day,
modes -- the dialect answers by itself (a ``Reply``).  docs/protocol.md,
section 14, is the description; what follows is how.

Three things only IRC needs live here:

* *registration*: ``NICK`` and ``USER`` (and ``PASS`` before them) may come
  in any order, and a client that opened a ``CAP`` negotiation registers
  only at ``CAP END``;
* *the question being answered*: the core answers ``who`` with one
  ``users`` message, which IRC shows as ``352``/``315`` for ``WHO``, as
  ``311``/``318`` for ``WHOIS`` or as ``303`` for ``ISON``.  The core
  handles a client's messages one at a time and answers each while handling
  it (a password check included: what the client sends next waits for the
  verdict), so the answer to a command always comes before the next command
  is parsed: ``self.asked``, the last command parsed, is the question;
* *names*: chatlab names may contain ``.``, which IRC clients take for a
  server's name, and IRC nicknames may contain ``|``, which chatlab names
  may not.  So ``.`` travels as ``|`` (``ada.l`` is ``ada|l`` on IRC) and
  back; an IRC nickname with ``.`` or another character chatlab cannot
  carry is refused with ``432``.

>>> irc = IrcDialect(Limits())
>>> irc.feed(b"NICK ada\\r\\nUSER ada 0 * :Ada Lovelace\\r\\n")
[b'NICK ada', b'USER ada 0 * :Ada Lovelace']
>>> irc.parse(b"NICK ada"), irc.parse(b"USER ada 0 * :Ada Lovelace")
(None, {'type': 'hello', 'name': 'ada'})
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass
from typing import Callable, ClassVar

from .. import __version__
from ..errors import LineTooLong
from ..framing import LineDecoder
from ..limits import Limits
from ..protocol import name_key
from .base import Framed, Message, Reply, Unit
from .lines import render_line

#: Bytes in one IRC line, CR LF included (RFC 1459, section 2.3): a longer
#: one is refused with 417 and the connection is closed, as chatlab closes a
#: lines-mode connection whose line is over its limit.
LINE_LIMIT = 512
#: What the server calls itself in its replies (":chatlab.server 001 ada ...").
#: A server's name has a dot: that is how a client tells it from a nickname.
SERVER = "chatlab.server"
#: The host part of every user's mask (nick!user@host).  chatlab tells nobody
#: where anybody connects from.
HOST = "chatlab"
NETWORK = "chatlab"

# The numeric replies this dialect sends (RFC 2812, section 5; 417 from the
# "Modern IRC" documents).  Named, so that the code says what it answers.
RPL_WELCOME, RPL_YOURHOST, RPL_CREATED, RPL_MYINFO, RPL_ISUPPORT = "001", "002", "003", "004", "005"
RPL_UMODEIS, RPL_USERHOST, RPL_ISON, RPL_UNAWAY, RPL_NOWAWAY = "221", "302", "303", "305", "306"
RPL_WHOISUSER, RPL_WHOISSERVER, RPL_ENDOFWHO, RPL_ENDOFWHOIS = "311", "312", "315", "318"
RPL_LISTSTART, RPL_LIST, RPL_LISTEND, RPL_CHANNELMODEIS, RPL_NOTOPIC = "321", "322", "323", "324", "331"
RPL_VERSION, RPL_WHOREPLY, RPL_NAMREPLY, RPL_ENDOFNAMES, RPL_ENDOFBANLIST = "351", "352", "353", "366", "368"
RPL_MOTD, RPL_MOTDSTART, RPL_ENDOFMOTD = "372", "375", "376"
ERR_UNKNOWNERROR, ERR_NOSUCHNICK, ERR_NOSUCHCHANNEL, ERR_CANNOTSENDTOCHAN = "400", "401", "403", "404"
ERR_TOOMANYCHANNELS, ERR_NOORIGIN, ERR_NORECIPIENT, ERR_NOTEXTTOSEND = "405", "409", "411", "412"
ERR_INPUTTOOLONG, ERR_UNKNOWNCOMMAND, ERR_NONICKNAMEGIVEN, ERR_ERRONEUSNICKNAME = "417", "421", "431", "432"
ERR_NICKNAMEINUSE, ERR_NOTONCHANNEL, ERR_NOTREGISTERED, ERR_NEEDMOREPARAMS = "433", "442", "451", "461"
ERR_ALREADYREGISTERED, ERR_PASSWDMISMATCH, ERR_CHANOPRIVSNEEDED, ERR_USERSDONTMATCH = "462", "464", "482", "502"
ERR_INVALIDCAPCMD = "410"

MOTD = (
    "This is a chatlab server: IRC is one of the ways in.",
    "Everyone shares the same rooms: IRC users, people at nc, chatlab chat clients.",
    "#lobby is the lobby; /join #ROOM makes a room; /msg NAME TEXT is private.",
    "Names with '.' show here with '|' (ada.l is ada|l).",
)

#: The commands a client may send before it is registered (anything else: 451).
REGISTRATION = frozenset({"CAP", "PASS", "NICK", "USER", "PING", "PONG", "QUIT"})

#: How a ``left`` with each reason reads in the QUIT line the room is sent.
QUIT_REASONS = {
    "quit": "Quit", "disconnected": "Connection closed", "protocol_error": "Protocol error",
    "idle": "Idle too long", "register_timeout": "Registration timed out", "flooding": "Excess flood",
    "too_slow": "Not reading: too much queued", "auth_failed": "Wrong password", "shutdown": "Server shutting down",
    "server_error": "Server error", "server_lost": "Server lost (another chatlab server of this chat)",
}


# ----------------------------------------------------------------- one line


@dataclass(frozen=True)
class Command:
    """One IRC line from a client: its command (upper case) and parameters."""

    verb: str
    params: tuple[str, ...]

    def param(self, index: int) -> str | None:
        return self.params[index] if index < len(self.params) else None


def parse_command(line: bytes) -> Command | None:
    """Split one line into its command and parameters (None: an empty line, which IRC ignores).

    >>> parse_command(b"PRIVMSG #lobby :hello there")
    Command(verb='PRIVMSG', params=('#lobby', 'hello there'))
    >>> parse_command(b"@time=x :ada!a@h privmsg  bob hi")  # tags and a prefix are skipped
    Command(verb='PRIVMSG', params=('bob', 'hi'))
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        # Old IRC clients send Latin-1; every byte is a Latin-1 character,
        # so the line can still be read (as irssi and weechat do).
        text = line.decode("latin-1")
    if text.startswith("@"):  # IRCv3 message tags: none are negotiated, so none are read
        text = text.partition(" ")[2]
    text = text.lstrip(" ")
    if text.startswith(":"):  # a client's own prefix says nothing the server does not know
        text = text.partition(" ")[2]
    params: list[str] = []
    verb = ""
    while text:
        text = text.lstrip(" ")
        if not text:
            break
        if verb and text.startswith(":"):
            params.append(text[1:])  # the trailing parameter: the rest of the line, spaces and all
            break
        word, _, text = text.partition(" ")
        if verb:
            params.append(word)
        else:
            verb = word.upper()
    return Command(verb, tuple(params)) if verb else None


#: What can never be inside an IRC line (RFC 2812, section 2.3.1), made visible as ``clean_text`` does:
#: a client's own CR echoed back (in a PONG, an error quoting its command) would end the line early.
_NEVER_IN_A_LINE = str.maketrans({"\r": "^M", "\n": "^J", "\0": "^@"})


def irc_line(source: str | None, verb: str, *params: str, trailing: str | None = None) -> bytes:
    """One line the server sends, CR LF included, never over ``LINE_LIMIT``.

    A trailing parameter too long for the line is shortened, with "..." to
    say so: what must arrive whole (a chat message) is split before it
    gets here (``privmsg``); what may be shortened is an echo or a reason.

    >>> irc_line("chatlab.server", "001", "ada", trailing="Welcome")
    b':chatlab.server 001 ada :Welcome\\r\\n'
    >>> irc_line("chatlab.server", "PONG", "chatlab.server", trailing="x\\r:evil PRIVMSG")
    b':chatlab.server PONG chatlab.server :x^M:evil PRIVMSG\\r\\n'
    >>> len(irc_line("chatlab.server", "PONG", "chatlab.server", trailing="x" * 600))
    512
    """
    head = " ".join(([":" + source] if source else []) + [verb, *params]).translate(_NEVER_IN_A_LINE).encode("utf-8")
    if trailing is None:
        return head + b"\r\n"
    tail = trailing.translate(_NEVER_IN_A_LINE).encode("utf-8")
    room = LINE_LIMIT - len(head) - 4  # " :" before the text, CR LF after it
    if len(tail) > room:
        tail = fit(tail.decode("utf-8"), room - 3)[0] + b"..."
    return head + b" :" + tail + b"\r\n"


def fit(text: str, budget: int) -> list[bytes]:
    """``text`` as UTF-8 pieces of at most ``budget`` bytes, cut at spaces where it can be.

    Never a character cut in two, and nothing lost: joined, the pieces are the text.

    >>> fit("one two three four five six", 16)
    [b'one two three ', b'four five six']
    """
    data = text.encode("utf-8")
    budget = max(budget, 16)  # a line always has room for some text (see _budget)
    pieces: list[bytes] = []
    while len(data) > budget:
        cut = budget
        while data[cut] & 0xC0 == 0x80:  # inside a character: back to its first byte
            cut -= 1
        space = data.rfind(b" ", budget // 2, cut)
        if space >= 0:
            cut = space + 1  # the space stays with the first piece: nothing is dropped
        pieces.append(data[:cut])
        data = data[cut:]
    return pieces + [data]


# ------------------------------------------------------------------ names


def irc_nick(name: str) -> str:
    """A chatlab name as an IRC nickname: ``.`` travels as ``|`` (IRC reads a dot as a server's name)."""
    return name.replace(".", "|")


def chat_name(nick: str) -> str:
    """An IRC nickname as the chatlab name it stands for (the inverse of ``irc_nick``)."""
    return nick.replace("|", ".")


def mask(name: str) -> str:
    """The ``nick!user@host`` a message from ``name`` comes from."""
    nick = irc_nick(name)
    return f"{nick}!{nick}@{HOST}"


def channel(room: str) -> str:
    return "#" + room


def room_of(target: str) -> str:
    return target[1:]


# ---------------------------------------------------------------- the dialect


class IrcDialect(Framed):
    """One IRC client's connection: its registration, its nickname, the question being answered."""

    name: ClassVar[str] = "irc"
    #: What the server calls itself; ``named()`` makes the dialect of a server with another name.
    server: ClassVar[str] = SERVER
    hears_own: ClassVar[bool] = False  # an IRC client shows its own PRIVMSG as it sends it
    keepalive: ClassVar[bool] = True  # IRC servers PING quiet clients; every client answers PONG

    def __init__(self, limits: Limits):
        super().__init__(limits, LineDecoder(LINE_LIMIT - 2))  # 512 bytes with the CR LF
        self.registered = False  # set when the core welcomes the client
        self.nick = "*"  # what numerics are addressed to: "*" until registered
        self.wanted: str | None = None  # the nickname of the last NICK before registration
        self.user: str | None = None  # USER's user name; registration needs it
        self.password: str | None = None  # PASS: the password of a name with an account
        self.negotiating = False  # CAP LS or REQ before registration: wait for CAP END
        self.asked: Command | None = None  # the command the core's next answer is for
        self.channels: dict[str, str] = {}  # room key -> room name, the rooms this client is in
        self.handlers: dict[str, Callable[[Command], Message | Reply | None]] = {
            "CAP": self._cap, "PASS": self._pass, "NICK": self._nick, "USER": self._user,
            "PING": self._ping, "PONG": self._pong, "QUIT": self._quit,
            # The rest need a registered client (REGISTRATION lists those that do not).
            "PRIVMSG": self._privmsg, "NOTICE": self._privmsg, "JOIN": self._join, "PART": self._part,
            "NAMES": self._rooms, "LIST": self._rooms, "WHO": self._who, "WHOIS": self._users,
            "ISON": self._users, "USERHOST": self._users, "TOPIC": self._topic, "MODE": self._mode,
            "AWAY": self._away, "MOTD": self._motd, "VERSION": self._version, "HELP": self._help,
        }

    @classmethod
    def named(cls, server: str) -> type[IrcDialect]:
        """The dialect of a server that calls itself ``server`` (``chatlab serve --irc-name``).

        >>> IrcDialect.named("irc.example.org")(Limits()).parse(b"PING :x")
        Reply(data=b':irc.example.org PONG irc.example.org :x\\r\\n', close=None)
        """
        if not server or any(c in server for c in " :,!@*?\r\n\0"):
            raise ValueError(f"{server!r} cannot be a server name: no spaces, ':', ',', '!', '@' or wildcards")
        return type(cls.__name__, (cls,), {"server": server, "__doc__": cls.__doc__})

    def refusal(self, reason: str, message: str) -> bytes:
        return irc_line(None, "ERROR", trailing=f"Closing link: {message} ({reason})")

    # ------------------------------------------------------------ bytes in

    def feed(self, data: bytes) -> list[Unit]:
        try:
            lines = self.decoder.feed(data)
        except LineTooLong as exc:
            raise LineTooLong(f"an IRC line is at most {LINE_LIMIT} bytes with its CR LF", expand(exc.items)) from None
        return expand(lines)

    def parse(self, unit: bytes) -> Message | Reply | None:
        command = parse_command(unit)
        if command is None:
            return None
        self.asked = command
        handler = self.handlers.get(command.verb)
        if not self.registered and command.verb not in REGISTRATION:
            return self._reply(ERR_NOTREGISTERED, trailing="You have not registered: NICK and USER first")
        if handler is None:
            return self._reply(ERR_UNKNOWNCOMMAND, command.verb[:32], trailing="Unknown command")
        return handler(command)

    # Registration: CAP, PASS, NICK, USER, in any order, then a hello.

    def _cap(self, command: Command) -> Message | Reply | None:
        sub = (command.param(0) or "").upper()
        if sub == "LS":
            self.negotiating = not self.registered
            return Reply(irc_line(self.server, "CAP", self.nick, "LS", trailing=""))  # nothing to offer
        if sub == "LIST":
            return Reply(irc_line(self.server, "CAP", self.nick, "LIST", trailing=""))
        if sub == "REQ":
            self.negotiating = not self.registered
            return Reply(irc_line(self.server, "CAP", self.nick, "NAK", trailing=command.param(1) or ""))
        if sub == "END":
            self.negotiating = False
            return self._hello()
        return self._reply(ERR_INVALIDCAPCMD, sub[:32] or "*", trailing="Invalid CAP command")

    def _pass(self, command: Command) -> Message | Reply | None:
        if self.registered:
            return self._reply(ERR_ALREADYREGISTERED, trailing="You may not reregister")
        if not command.param(0):
            return self._needs_more(command)
        self.password = command.params[0]
        return None

    def _nick(self, command: Command) -> Message | Reply | None:
        nick = command.param(0)
        if not nick:
            return self._reply(ERR_NONICKNAMEGIVEN, trailing="No nickname given")
        if self.registered:
            if name_key(chat_name(nick)) == name_key(chat_name(self.nick)):
                return None
            return self._reply(ERR_UNKNOWNERROR, "NICK", trailing="chatlab keeps the name you registered with; "
                                                                  "reconnect to use another")
        if "." in nick:
            return self._reply(ERR_ERRONEUSNICKNAME, nick[:64],
                               trailing="Erroneous nickname: IRC reads '.' as a server name; use '|', "
                                        "which other chatlab clients see as '.'")
        self.wanted = nick
        return self._hello()

    def _user(self, command: Command) -> Message | Reply | None:
        if self.registered:
            return self._reply(ERR_ALREADYREGISTERED, trailing="You may not reregister")
        if len(command.params) < 4 or not command.params[0] or not command.params[3]:  # a name, and a real name
            return self._needs_more(command)
        self.user = command.params[0]
        return self._hello()

    def _hello(self) -> Message | None:
        """The hello, once NICK and USER are both in and no CAP negotiation is open."""
        if self.registered or self.negotiating or self.wanted is None or self.user is None:
            return None
        hello: Message = {"type": "hello", "name": chat_name(self.wanted)}
        if self.password is not None:
            hello["password"] = self.password
        return hello

    def _ping(self, command: Command) -> Message | Reply | None:
        token = command.param(0)
        if token is None:
            return self._reply(ERR_NOORIGIN, trailing="No origin specified")
        # Answered here, in order with everything else this client was sent.
        return Reply(irc_line(self.server, "PONG", self.server, trailing=token))

    def _pong(self, command: Command) -> Message:
        return {"type": "pong"}  # the answer to the server's keep-alive PING

    def _quit(self, command: Command) -> Message:
        reason = command.param(0)
        return {"type": "bye", "text": reason} if reason else {"type": "bye"}  # the rooms see the reason

    # Chat.

    def _privmsg(self, command: Command) -> Message | Reply | None:
        quiet = command.verb == "NOTICE"  # "automatic replies must never be sent in response to a NOTICE"
        target, text = command.param(0), command.param(1)
        if not target:
            return None if quiet else self._reply(ERR_NORECIPIENT, trailing=f"No recipient given ({command.verb})")
        if not text:
            return None if quiet else self._reply(ERR_NOTEXTTOSEND, trailing="No text to send")
        if text.startswith("\x01"):  # CTCP: a client-to-client request inside the text
            ctcp = text.strip("\x01")
            if not ctcp.upper().startswith("ACTION "):
                if quiet:
                    return None  # a CTCP answer: nobody here asked
                return self._notice(f"chatlab relays no CTCP {ctcp.split(' ')[0][:20]} (only ACTION, as /me)")
            text = "/me " + ctcp[7:]  # "/me waves": how the other clients read an action
        if target.startswith("#"):
            return {"type": "say", "room": room_of(target), "text": text}
        return {"type": "dm", "to": chat_name(target.split("!")[0]), "text": text}

    def _join(self, command: Command) -> Message | Reply | None:
        target = command.param(0)
        if not target:
            return self._needs_more(command)
        if target == "0":
            return self._notice("JOIN 0 (leave every channel) is not supported here: PART each one")
        if not target.startswith("#"):
            return self._reply(ERR_NOSUCHCHANNEL, target[:64], trailing="No such channel: channels start with #")
        if name_key(room_of(target)) in self.channels:
            return None  # in it already: RFC 2812 asks for no reply
        return {"type": "join", "room": room_of(target)}

    def _part(self, command: Command) -> Message | Reply | None:
        target = command.param(0)
        if not target:
            return self._needs_more(command)
        if not target.startswith("#"):
            return self._reply(ERR_NOSUCHCHANNEL, target[:64], trailing="No such channel")
        reason = command.param(1)
        return {"type": "leave", "room": room_of(target), **({"text": reason} if reason else {})}

    def _rooms(self, command: Command) -> Message:
        return {"type": "rooms"}  # NAMES and LIST: every room and its members, filtered in encode

    def _who(self, command: Command) -> Message:
        target = command.param(0)
        if target and target.startswith("#"):
            return {"type": "who", "room": room_of(target)}
        return {"type": "who"}

    def _users(self, command: Command) -> Message | Reply:
        if not command.params:
            return self._needs_more(command)
        return {"type": "who"}  # WHOIS, ISON, USERHOST: who is here, then each name looked up

    def _topic(self, command: Command) -> Message | Reply:
        target = command.param(0)
        if not target:
            return self._needs_more(command)
        if len(command.params) > 1:
            return self._reply(ERR_CHANOPRIVSNEEDED, target[:64], trailing="chatlab rooms have no topic to set")
        return {"type": "who", "room": room_of(target)}  # 331 if the room exists, 403 if not

    def _mode(self, command: Command) -> Reply | None:
        target, change = command.param(0), command.param(1)
        if not target:
            return self._needs_more(command)
        if not target.startswith("#"):
            if name_key(chat_name(target)) != name_key(chat_name(self.nick)):
                return self._reply(ERR_USERSDONTMATCH, trailing="Cannot see or change the modes of others")
            # chatlab has no user modes; a client's "MODE ada +i" after registering changes nothing.
            return None if change else self._reply(RPL_UMODEIS, "+")
        if change is None:
            return self._reply(RPL_CHANNELMODEIS, target[:64], "+n")  # n: only members speak in a room
        if change.lstrip("+") == "b":
            return self._reply(RPL_ENDOFBANLIST, target[:64], trailing="End of channel ban list")
        return self._reply(ERR_CHANOPRIVSNEEDED, target[:64], trailing="chatlab rooms have no modes to change")

    def _away(self, command: Command) -> Reply:
        if command.param(0):
            return self._reply(RPL_NOWAWAY, trailing="You have been marked as being away (chatlab tells nobody)")
        return self._reply(RPL_UNAWAY, trailing="You are no longer marked as being away")

    def _motd(self, command: Command) -> Reply:
        return Reply(self._motd_lines())

    def _version(self, command: Command) -> Reply:
        return self._reply(RPL_VERSION, f"chatlab-{__version__}", self.server, trailing="the chatlab teaching chat server")

    def _help(self, command: Command) -> Reply:
        return self._notice("Commands: JOIN PART PRIVMSG NOTICE NAMES LIST WHO WHOIS TOPIC MODE ISON USERHOST "
                            "AWAY PING MOTD VERSION QUIT. docs/protocol.md, section 14, says how each maps.")

    # ------------------------------------------------------------ bytes out

    def encode(self, msg: Message) -> bytes:
        """A message for this client alone: often the answer to ``self.asked``."""
        kind = msg["type"]
        if kind == "welcome":
            return self._welcome(msg)
        if kind == "joined" and "members" in msg:  # the answer to our JOIN
            self.channels[name_key(msg["room"])] = msg["room"]
            # A room has no topic, so no 332 follows (RFC 2812 sends RPL_TOPIC only for a topic).
            return irc_line(mask(msg["name"]), "JOIN", channel(msg["room"])) + self._names(msg["room"], msg["members"],
                                                                                    count=msg.get("count"))
        if kind == "left" and msg.get("reason") == "left":  # the answer to our PART
            self.channels.pop(name_key(msg["room"]), None)
            return self.encode_shared(msg)
        if kind == "users":
            return self._users_answer(msg)
        if kind == "rooms":
            return self._rooms_answer(msg)
        if kind == "message" and "to" in msg:
            return privmsg(mask(msg["from"]), irc_nick(msg["to"]), msg["text"])
        if kind == "history":
            return self._history(msg)
        if kind == "error":
            return self._error(msg["code"], msg["message"])
        if kind == "closing":
            return irc_line(None, "ERROR", trailing=f"Closing link: {self.nick} ({msg['message']})")
        if kind == "ping":  # the keep-alive: a quiet client is asked to show it is still there
            return irc_line(None, "PING", trailing=self.server)
        if kind == "file_offer":
            return self._notice_line(f"{irc_nick(msg['from'])} offers the file {msg['name']} ({msg['size']:,} "
                                     "bytes); only a chatlab client can accept it")
        return self.encode_shared(msg)

    @classmethod
    def encode_shared(cls, msg: Message) -> bytes:
        """What a room is sent: the same bytes for every IRC client in it."""
        kind = msg["type"]
        if kind == "message" and "room" in msg:
            return privmsg(mask(msg["from"]), channel(msg["room"]), msg["text"])
        if kind == "joined":
            return irc_line(mask(msg["name"]), "JOIN", channel(msg["room"]))
        if kind == "left":  # with the leaver's own words, if it gave some (RFC 2812: else the nick, or "Quit")
            said = msg.get("text")
            if msg["reason"] == "left":
                return irc_line(mask(msg["name"]), "PART", channel(msg["room"]), trailing=said or irc_nick(msg["name"]))
            why = QUIT_REASONS.get(msg["reason"], msg["reason"])
            return irc_line(mask(msg["name"]), "QUIT", trailing=f"{why}: {said}" if said else why)
        # Anything else the chat may say to a room reads as a notice from the server.
        return b"".join(irc_line(cls.server, "NOTICE", "*", trailing=piece.decode("utf-8"))
                        for piece in fit(render_line(msg).replace("\n", " "), _budget(cls.server, "NOTICE", "*")))

    # The answers.

    def _welcome(self, msg: Message) -> bytes:
        """Registered: 001-004, 005 (what this server supports), the MOTD, then the lobby's JOIN and names."""
        self.registered = True
        self.nick = irc_nick(msg["name"])
        room = msg.get("room", "lobby")
        self.channels[name_key(room)] = room
        return (self._numeric(RPL_WELCOME, trailing=f"Welcome to the chatlab IRC network, {mask(msg['name'])}")
                + self._numeric(RPL_YOURHOST, trailing=f"Your host is {self.server}, running chatlab-{__version__}")
                + self._numeric(RPL_CREATED, trailing="This server speaks chatlab protocol 1 to IRC clients")
                + self._numeric(RPL_MYINFO, self.server, f"chatlab-{__version__}", "i", "n")
                + self._isupport() + self._motd_lines()
                + irc_line(mask(msg["name"]), "JOIN", channel(room))
                + self._names(room, msg["users"], count=msg.get("count")))

    def _isupport(self) -> bytes:
        """005: the limits that apply here, as tokens a client reads (at most 13 to a line)."""
        limits = self.limits
        tokens = [f"NETWORK={NETWORK}", "CASEMAPPING=ascii", "CHANTYPES=#", "PREFIX=", "CHANMODES=,,,n",
                  f"LINELEN={LINE_LIMIT}", "TARGMAX=JOIN:,PART:,PRIVMSG:,NOTICE:,NAMES:,LIST:,WHOIS:1"]
        if limits.max_name:
            tokens += [f"NICKLEN={limits.max_name}", f"CHANNELLEN={limits.max_name + 1}"]
        tokens.append(f"CHANLIMIT=#:{limits.max_rooms_per_user or ''}")
        return b"".join(self._numeric(RPL_ISUPPORT, *tokens[i:i + 13], trailing="are supported by this server")
                        for i in range(0, len(tokens), 13))

    def _motd_lines(self) -> bytes:
        return (self._numeric(RPL_MOTDSTART, trailing=f"- {self.server} Message of the day -")
                + b"".join(self._numeric(RPL_MOTD, trailing=f"- {line}") for line in MOTD)
                + self._numeric(RPL_ENDOFMOTD, trailing="End of /MOTD command."))

    def _names(self, room: str, members: list[str], end: bool = True, count: int | None = None) -> bytes:
        """353 lines listing a room's members, as many as the line limit needs; then 366.

        ``count``: how many members there are, when the core listed only some
        (a large room lists those who have spoken: docs/protocol.md, section 6.1).
        """
        head = self._numeric(RPL_NAMREPLY, "=", channel(room), trailing="")
        budget = LINE_LIMIT - len(head)
        out, line = b"", ""
        for nick in (irc_nick(m) for m in members):
            if line and len((line + " " + nick).encode()) > budget:
                out += self._numeric(RPL_NAMREPLY, "=", channel(room), trailing=line)
                line = ""
            line = f"{line} {nick}" if line else nick
        if line:
            out += self._numeric(RPL_NAMREPLY, "=", channel(room), trailing=line)
        if end:
            unlisted = (count or 0) - len(members)
            out += self._numeric(RPL_ENDOFNAMES, channel(room), trailing="End of /NAMES list."
                                 + (f" ({unlisted:,} more not listed)" if unlisted > 0 else ""))
        return out

    def _rooms_answer(self, msg: Message) -> bytes:
        """The core's room list as NAMES (353/366) or LIST (321/322/323) asked for."""
        rooms = {name_key(r["name"]): r for r in msg["rooms"]}
        # The core lists as many rooms as fit in one message, and as many
        # members of each as fit in a part of one: a cut list is said so.
        more = " (more rooms than one answer holds)" if msg.get("more") else ""
        asked = self.asked or Command("NAMES", ())
        wanted = [t for t in (asked.param(0) or "").split(",") if t]
        if asked.verb == "LIST":
            listed = [rooms[name_key(room_of(t))] for t in wanted if name_key(room_of(t)) in rooms] if wanted \
                else list(rooms.values())
            return (self._numeric(RPL_LISTSTART, "Channel", trailing="Users  Name")
                    + b"".join(self._numeric(RPL_LIST, channel(r["name"]), str(r.get("count", len(r["members"]))),
                                             trailing="") for r in listed)
                    + self._numeric(RPL_LISTEND, trailing="End of /LIST" + more))
        if not wanted:  # every room, then one end
            return (b"".join(self._names(r["name"], r["members"], end=False) for r in rooms.values())
                    + self._numeric(RPL_ENDOFNAMES, "*", trailing="End of /NAMES list." + more))
        out = b""
        for target in wanted:
            room = rooms.get(name_key(room_of(target))) if target.startswith("#") else None
            if room is not None:
                out += self._names(room["name"], room["members"], end=False)
        return out + self._numeric(RPL_ENDOFNAMES, ",".join(wanted)[:200], trailing="End of /NAMES list.")

    def _users_answer(self, msg: Message) -> bytes:
        """The core's ``users`` as the command asked for: WHO, WHOIS, ISON, USERHOST or TOPIC."""
        asked = self.asked or Command("WHO", ())
        nicks = [irc_nick(u) for u in msg["users"]]
        here = {name_key(chat_name(n)): n for n in nicks}
        if asked.verb == "TOPIC":
            return self._numeric(RPL_NOTOPIC, channel(msg.get("room", "")), trailing="No topic is set")
        if asked.verb == "WHOIS":
            out = b""
            targets = (asked.params[-1] if asked.params else "").split(",")
            for target in [t for t in targets if t]:
                nick = here.get(name_key(chat_name(target)))
                if nick is None:
                    out += self._numeric(ERR_NOSUCHNICK, target[:64], trailing="No such nick/channel")
                else:
                    out += (self._numeric(RPL_WHOISUSER, nick, nick, HOST, "*", trailing=nick)
                            + self._numeric(RPL_WHOISSERVER, nick, self.server, trailing="a chatlab server"))
            return out + self._numeric(RPL_ENDOFWHOIS, ",".join(targets)[:200], trailing="End of /WHOIS list.")
        if asked.verb == "ISON":
            wanted = " ".join(asked.params).split()
            return self._numeric(RPL_ISON, trailing=" ".join(here[k] for k in (name_key(chat_name(w)) for w in wanted)
                                                              if k in here))
        if asked.verb == "USERHOST":
            found = [here[k] for k in (name_key(chat_name(w)) for w in asked.params[:5]) if k in here]
            return self._numeric(RPL_USERHOST, trailing=" ".join(f"{n}=+{n}@{HOST}" for n in found))
        # WHO: a room's members, or everyone matching a mask.
        where = channel(msg["room"]) if msg.get("room") else "*"
        pattern = asked.param(0) or "*"
        if not pattern.startswith("#"):
            nicks = [n for n in nicks if fnmatch.fnmatchcase(n.lower(), pattern.lower()) or pattern in ("0", "*")]
        return (b"".join(self._numeric(RPL_WHOREPLY, where, n, HOST, self.server, n, "H", trailing=f"0 {n}")
                         for n in nicks)
                + self._numeric(RPL_ENDOFWHO, pattern[:64], trailing="End of /WHO list."))

    def _history(self, msg: Message) -> bytes:
        """A room's recent messages, as notices from the server: clearly not said just now."""
        target = channel(msg["room"])
        budget = _budget(self.server, "NOTICE", target)
        said = [f"[{time.strftime('%H:%M', time.localtime(m['ts']))}] <{irc_nick(m['from'])}> {m['text']}"
                for m in msg["messages"]]
        texts = [f"--- {len(said)} earlier messages in {target} ---", *said, "--- end of history ---"]
        return b"".join(irc_line(self.server, "NOTICE", target, trailing=piece.decode("utf-8"))
                        for text in texts for piece in fit(text, budget))

    def _error(self, code: str, message: str) -> bytes:
        """The core refused something: the numeric an IRC client expects for it."""
        asked = self.asked or Command("", ())
        if asked.verb == "NOTICE" and code != "too_large":
            return b""  # never an automatic reply to a NOTICE (RFC 2812, section 3.3.2)
        target = (asked.param(0) or "*")[:64]
        wanted = (self.wanted or "*")[:64]
        if code == "name_taken":
            return self._numeric(ERR_NICKNAMEINUSE, wanted, trailing="Nickname is already in use")
        if code == "bad_name":
            # The core's rule names '.', which travels as '|' here (irc_nick).
            return self._numeric(ERR_ERRONEUSNICKNAME, wanted,
                                 trailing=f"Erroneous nickname: {message.replace(repr('.'), repr('|'))}")
        if code in ("auth_required", "auth_failed"):
            return self._numeric(ERR_PASSWDMISMATCH, trailing=f"Password incorrect: {message} (send PASS before NICK)")
        if code == "already_registered":
            return self._numeric(ERR_ALREADYREGISTERED, trailing="You may not reregister")
        if code == "not_registered":
            return self._numeric(ERR_NOTREGISTERED, trailing="You have not registered")
        if code == "unknown_user":
            return self._numeric(ERR_NOSUCHNICK, target, trailing="No such nick/channel")
        if code == "bad_room":
            return self._numeric(ERR_NOSUCHCHANNEL, target, trailing=f"No such channel: {message}")
        if code == "not_in_room":
            if asked.verb == "WHO":
                return self._numeric(RPL_ENDOFWHO, target, trailing="End of /WHO list.")  # nobody: no error
            if asked.verb in ("PRIVMSG", "NOTICE"):
                return self._numeric(ERR_CANNOTSENDTOCHAN, target, trailing=f"Cannot send to channel: {message}")
            if asked.verb == "PART":
                return self._numeric(ERR_NOTONCHANNEL, target, trailing="You're not on that channel")
            return self._numeric(ERR_NOSUCHCHANNEL, target, trailing="No such channel")
        if code == "too_many_rooms":
            return self._numeric(ERR_TOOMANYCHANNELS, target, trailing=f"You have joined too many channels: {message}")
        if code == "bad_text":
            return self._numeric(ERR_NOTEXTTOSEND, trailing="No text to send")
        if code == "too_large":
            return self._numeric(ERR_INPUTTOOLONG, trailing=f"Input line was too long: {message}")
        if code == "unknown_type":
            return self._numeric(ERR_UNKNOWNCOMMAND, asked.verb[:32] or "*", trailing="Unknown command")
        # rate_limited, and whatever else the chat refuses: told in words.
        return self._notice_line(f"{message} ({code})")

    # Helpers.

    def _numeric(self, number: str, *params: str, trailing: str | None = None) -> bytes:
        """``:server NUMBER nick params :text`` (a text too long for the line is shortened, with '...')."""
        return irc_line(self.server, number, self.nick, *params, trailing=trailing)

    def _reply(self, number: str, *params: str, trailing: str | None = None) -> Reply:
        return Reply(self._numeric(number, *params, trailing=trailing))

    def _needs_more(self, command: Command) -> Reply:
        return self._reply(ERR_NEEDMOREPARAMS, command.verb[:32], trailing="Not enough parameters")

    def _notice_line(self, text: str) -> bytes:
        return b"".join(irc_line(self.server, "NOTICE", self.nick, trailing=piece.decode("utf-8"))
                        for piece in fit(text, _budget(self.server, "NOTICE", self.nick)))

    def _notice(self, text: str) -> Reply:
        return Reply(self._notice_line(text))


def _budget(source: str, verb: str, *params: str) -> int:
    """Bytes left for the trailing text of ``:source VERB params :`` within one line."""
    return LINE_LIMIT - len(irc_line(source, verb, *params, trailing=""))


def privmsg(source: str, target: str, text: str) -> bytes:
    """A chat message as PRIVMSG lines: split where one line cannot hold it, never cut.

    A text that starts with ``/me `` is an action (CTCP ACTION, what ``/me``
    sends in every IRC client), each piece wrapped in its own ``\\x01``.

    >>> privmsg("ada!ada@chatlab", "#lobby", "/me waves")
    b':ada!ada@chatlab PRIVMSG #lobby :\\x01ACTION waves\\x01\\r\\n'
    """
    budget = _budget(source, "PRIVMSG", target)
    if text.startswith("/me ") and text[4:].strip():
        return b"".join(irc_line(source, "PRIVMSG", target, trailing=f"\x01ACTION {piece.decode('utf-8')}\x01")
                        for piece in fit(text[4:], budget - 9))
    return b"".join(irc_line(source, "PRIVMSG", target, trailing=piece.decode("utf-8"))
                    for piece in fit(text, budget))


#: Commands whose first parameter may list several targets ("JOIN #a,#b").
MULTI_TARGET = frozenset({"JOIN", "PART", "PRIVMSG", "NOTICE"})


def expand(lines: list[bytes]) -> list[Unit]:
    """Each line a unit; empty lines dropped (IRC ignores them); a line with several targets one unit per target.

    ``JOIN #a,#b`` is two joins, as if two lines had come: each is one message
    for the core, with its own answer and its own place in the rate limit.

    >>> expand([b"JOIN #a,#b", b"", b"PRIVMSG ada,bob :hi all"])
    [b'JOIN #a', b'JOIN #b', b'PRIVMSG ada :hi all', b'PRIVMSG bob :hi all']
    """
    units: list[Unit] = []
    for line in lines:
        if not line.strip(b" "):
            continue
        command = parse_command(line)
        if command is None or command.verb not in MULTI_TARGET or "," not in (command.param(0) or ""):
            units.append(line)
            continue
        targets = [t for t in command.params[0].split(",") if t]
        keys = (command.param(1) or "").split(",") if command.verb == "JOIN" else []
        rest = list(command.params[1:]) if command.verb != "JOIN" else []
        for index, target in enumerate(targets):
            params = [target, *([keys[index]] if index < len(keys) and keys[index] else []), *rest]
            units.append(irc_line(None, command.verb, *params[:-1], trailing=params[-1])[:-2] if len(params) > 1
                         else irc_line(None, command.verb, target)[:-2])
    return units


__all__ = ["IrcDialect", "Command", "parse_command", "irc_line", "irc_nick", "chat_name", "fit", "privmsg",
           "expand", "LINE_LIMIT", "SERVER"]
