"""The IRC dialect, sans-IO: lines and their limit, registration, each command and its numerics.

No sockets here: the dialect is fed bytes (one at a time where TCP could
cut them), and a ``CoreDriver`` plays the whole chat around it, so each
answer an IRC client gets is checked against the very core every other
client meets.  tests/test_irc_live.py does the same over real TCP, with
real IRC clients.
"""

from __future__ import annotations

import dataclasses

import pytest

from chatlab.accounts import Accounts, hash_password
from chatlab.dialects import DIALECTS, Reply
from chatlab.dialects.irc import (
    LINE_LIMIT, Command, IrcDialect, chat_name, expand, fit, irc_nick, parse_command, privmsg,
)
from chatlab.errors import FramingError
from chatlab.limits import Limits
from chatlab.protocol import name_key
from chatlab.testing import CoreDriver
from irc_support import words

pytestmark = pytest.mark.timeout(30)

REGISTER = b"NICK bob\r\nUSER bob 0 * :Bob the Builder\r\n"


def verbs(data: bytes) -> list[str]:
    return [words(line)[1] for line in data.decode().split("\r\n") if line]


class Room:
    """A CoreDriver with IRC connections: ``irc(cid)`` connects one, ``said(cid)`` is what it got as lines."""

    def __init__(self, **options):
        self.driver = CoreDriver(**options)

    def irc(self, cid, registration: bytes | None = REGISTER) -> bytes:
        self.driver.connect(cid, dialect=IrcDialect(self.driver.core.limits))
        if registration is not None:
            self.driver.send(cid, registration)
        return self.driver.take(cid)

    def send(self, cid, data: bytes) -> list[str]:
        self.driver.send(cid, data)
        return self.said(cid)

    def said(self, cid) -> list[str]:
        data = self.driver.take(cid)
        assert data == b"" or data.endswith(b"\r\n"), data
        lines = data.decode().split("\r\n")[:-1]
        assert all(len(line.encode()) + 2 <= LINE_LIMIT for line in lines), [len(x) for x in lines]
        return lines


# ---------------------------------------------------------------- the lines


def test_a_line_is_a_command_and_its_parameters():
    assert parse_command(b"privmsg #lobby :hello  there ") == Command("PRIVMSG", ("#lobby", "hello  there "))
    assert parse_command(b"JOIN   #a") == Command("JOIN", ("#a",))  # runs of spaces are one separator
    assert parse_command(b"@label=1 :bob!b@h PING :x y") == Command("PING", ("x y",))
    assert parse_command(b"PRIVMSG #a ::)") == Command("PRIVMSG", ("#a", ":)"))
    assert parse_command(b"PRIVMSG #a :") == Command("PRIVMSG", ("#a", ""))
    assert parse_command("PRIVMSG #a :caf\u00e9".encode("latin-1")).params[1] == "caf\u00e9"  # an old client
    assert parse_command(b"   ") is None


def test_lines_arrive_whole_whatever_pieces_tcp_cuts_them_into():
    stream = b"NICK bob\r\nUSER bob 0 * :Bob\nJOIN #a,#b\r\n\r\nPING :x\r\n"
    whole = IrcDialect(Limits()).feed(stream)
    dialect, pieces = IrcDialect(Limits()), []
    for i in range(len(stream)):
        pieces += dialect.feed(stream[i:i + 1])
    assert pieces == whole == [b"NICK bob", b"USER bob 0 * :Bob", b"JOIN #a", b"JOIN #b", b"PING :x"]
    assert dialect.pending == 0
    dialect.feed(b"PRIV")
    assert dialect.pending == 4


def test_a_line_is_at_most_512_bytes_with_its_crlf():
    most = b"PRIVMSG #a :" + b"x" * (LINE_LIMIT - 2 - 12)
    assert IrcDialect(Limits()).feed(most + b"\r\n") == [most]
    dialect = IrcDialect(Limits())
    with pytest.raises(FramingError) as refused:
        dialect.feed(b"PING :ok\r\n" + most + b"x")  # one byte over, before any CR LF
    assert refused.value.code == "too_large" and "512" in str(refused.value)
    assert refused.value.items == [b"PING :ok"]  # what came whole before it is still handled


def test_a_command_for_several_targets_is_one_unit_per_target():
    assert expand([b"JOIN #a,#b key1", b"PART #a,#b :bye now", b"NOTICE x,y :hi"]) == [
        b"JOIN #a :key1", b"JOIN #b", b"PART #a :bye now", b"PART #b :bye now", b"NOTICE x :hi", b"NOTICE y :hi"]


def test_a_long_text_is_split_never_cut():
    text = "word " * 200 + "é" * 300 + "end"
    pieces = fit(text, 100)
    assert b"".join(pieces).decode() == text  # nothing lost, no character cut in two
    assert all(len(p) <= 100 for p in pieces) and len(pieces) > 10
    lines = privmsg("ada!ada@chatlab", "#lobby", text).split(b"\r\n")[:-1]
    assert all(len(line) + 2 <= LINE_LIMIT for line in lines)
    assert "".join(words(line.decode())[2][1] for line in lines) == text
    action = privmsg("ada!ada@chatlab", "#lobby", "/me " + "waves " * 100).split(b"\r\n")[:-1]
    assert len(action) == 2 and all(words(a.decode())[2][1].startswith("\x01ACTION ") for a in action)


def test_names_travel_with_bars_for_dots():
    assert irc_nick("ada.l") == "ada|l" and chat_name("ada|l") == "ada.l"
    assert chat_name(irc_nick("a.b.c")) == "a.b.c"


def test_the_registry_knows_the_dialect():
    assert DIALECTS["irc"] is IrcDialect


# -------------------------------------------------------------- registration


def test_registration_answers_like_an_irc_server():
    room = Room()
    room.driver.register(1, "ada")
    got = room.irc(2)
    lines = got.decode().split("\r\n")[:-1]
    assert [words(x)[1] for x in lines] == ["001", "002", "003", "004", "005", "375", "372", "372", "372", "372",
                                            "376", "JOIN", "353", "366"]
    assert words(lines[0])[2][0] == "bob"  # numerics are addressed to the nick
    isupport = words(lines[4])[2]
    assert {"NICKLEN=32", "CHANNELLEN=33", "CHANLIMIT=#:10", "LINELEN=512", "CHANTYPES=#"} <= set(isupport)
    assert words(lines[11]) == ("bob!bob@chatlab", "JOIN", ["#lobby"])
    assert words(lines[12])[2] == ["bob", "=", "#lobby", "ada bob"]
    assert room.driver.frames(1)[-1] == {"type": "joined", "name": "bob", "room": "lobby"}


def test_nick_and_user_in_either_order_and_a_cap_negotiation_waits_for_its_end():
    room = Room()
    assert verbs(room.irc(1, b"USER bob 0 * :Bob\r\nNICK bob\r\n"))[0] == "001"
    got = room.irc(2, b"CAP LS 302\r\nNICK cy\r\nUSER cy 0 * :Cy\r\nCAP REQ :sasl\r\n")
    assert got == b":chatlab.server CAP * LS :\r\n:chatlab.server CAP * NAK :sasl\r\n"  # nothing offered
    assert [words(x)[1] for x in room.send(2, b"CAP END\r\n")][:2] == ["001", "002"]
    assert words(room.send(2, b"CAP LIST\r\n")[0])[2] == ["cy", "LIST", ""]


def test_before_registration_only_registration_is_answered():
    room = Room()
    room.irc(1, None)
    assert [words(x)[1] for x in room.send(1, b"JOIN #a\r\nPRIVMSG #lobby :hi\r\nFOO\r\n")] == ["451"] * 3
    assert words(room.send(1, b"PING :early\r\n")[0]) == ("chatlab.server", "PONG", ["chatlab.server", "early"])
    assert [words(x)[1] for x in room.send(1, b"NICK\r\nUSER x\r\nUSER x 0 * :\r\n")] == ["431", "461", "461"]
    assert words(room.send(1, b"NICK a.b\r\n")[0])[1] == "432"  # a dot reads as a server's name on IRC
    assert room.driver.core.users == []


def test_a_taken_or_bad_nick_gets_433_or_432_and_another_try_works():
    room = Room()
    room.driver.register(1, "ada")
    room.irc(2, None)
    assert words(room.send(2, b"NICK ADA\r\nUSER a 0 * :A\r\n")[0])[1:] == (
        "433", ["*", "ADA", "Nickname is already in use"])  # the same name ignoring case, from another dialect
    refused = words(room.send(2, b"NICK a[b\r\n")[0])  # chatlab names have no brackets
    assert refused[1] == "432" and refused[2][:2] == ["*", "a[b"] and "'['" in refused[2][2]
    welcome = room.send(2, b"NICK ada|l\r\n")
    assert words(welcome[0])[1:3] == ("001", ["ada|l", words(welcome[0])[2][1]])
    assert room.driver.core.users == ["ada", "ada.l"]  # one name, shown with a dot to everyone else
    assert room.driver.frames(1)[-1]["name"] == "ada.l"


def test_a_nick_change_after_registration_is_refused_in_words():
    room = Room()
    room.irc(1)
    assert room.send(1, b"NICK BOB\r\n") == []  # the same nick: nothing to do
    assert words(room.send(1, b"NICK robert\r\n")[0])[1] == "400"
    assert words(room.send(1, b"USER a 0 * :again\r\n")[0])[1] == "462"
    assert words(room.send(1, b"PASS x\r\n")[0])[1] == "462"


# ---------------------------------------------------------------------- chat


def test_channels_messages_and_private_messages_cross_dialects():
    room = Room()
    room.driver.register(1, "ada")
    room.irc(2)
    room.driver.frames(1)
    assert room.send(2, b"PRIVMSG #lobby :hi all\r\n") == []  # an IRC client is not sent its own PRIVMSG back
    said = room.driver.frames(1)[0]
    assert (said["from"], said["text"], said["room"]) == ("bob", "hi all", "lobby")
    room.driver.send_msg(1, {"type": "say", "text": "welcome, bob"})
    assert room.said(2) == [":ada!ada@chatlab PRIVMSG #lobby :welcome, bob"]
    room.driver.send_msg(1, {"type": "dm", "to": "BOB", "text": "psst"})
    assert room.said(2) == [":ada!ada@chatlab PRIVMSG bob :psst"]
    assert room.send(2, b"PRIVMSG ada :and back\r\n") == []
    assert room.driver.frames(1)[-1]["to"] == "ada"
    joined = room.send(2, b"JOIN #Games\r\n")
    assert [words(x)[1] for x in joined] == ["JOIN", "353", "366"] and words(joined[1])[2][3] == "bob"
    room.driver.send_msg(1, {"type": "join", "room": "games"})
    assert room.said(2) == [":ada!ada@chatlab JOIN #Games"]  # the room as first spelled
    assert room.send(2, b"JOIN #games\r\n") == []  # in it already: no second JOIN
    assert room.send(2, b"PRIVMSG #games :\x01ACTION waves\x01\r\n") == []
    assert [m["text"] for m in room.driver.frames(1) if m["type"] == "message"] == ["/me waves"]
    room.driver.send_msg(1, {"type": "say", "room": "games", "text": "/me waves back"})
    assert room.said(2) == [":ada!ada@chatlab PRIVMSG #Games :\x01ACTION waves back\x01"]
    assert words(room.send(2, b"PART #games :see you\r\n")[0]) == ("bob!bob@chatlab", "PART", ["#Games", "see you"])
    assert room.driver.frames(1)[-1] == {"type": "left", "name": "bob", "room": "Games", "reason": "left",
                                         "text": "see you"}  # the reason a PART gives is told to the room
    room.driver.send_msg(1, {"type": "leave", "room": "games"})
    room.driver.send_msg(1, {"type": "bye"})
    assert room.said(2) == [":ada!ada@chatlab QUIT :Quit"]


def test_part_and_quit_reasons_reach_every_dialect_and_default_to_the_nick():
    room = Room()
    room.driver.register(1, "ada")
    room.irc(2)
    room.irc(3, b"NICK cy\r\nUSER cy 0 * :Cy\r\n")
    room.send(2, b"JOIN #games\r\n")
    room.send(3, b"JOIN #games\r\n")
    room.said(2)
    assert room.send(3, b"PART #games\r\n") == [":cy!cy@chatlab PART #games :cy"]  # no reason: the nick (RFC 2812)
    assert room.said(2) == [":cy!cy@chatlab PART #games :cy"]
    room.driver.frames(1)
    room.send(2, b"QUIT :gone \x1b[2J fishing\r\n")
    assert room.said(3) == [":bob!bob@chatlab QUIT :Quit: gone ^[[2J fishing"]  # cleaned like any text
    assert room.driver.frames(1) == [{"type": "left", "name": "bob", "room": "lobby", "reason": "quit",
                                      "text": "gone ^[[2J fishing"}]


def test_a_long_message_from_another_dialect_reaches_irc_whole():
    room = Room()
    room.driver.register(1, "ada")
    room.irc(2)
    text = " ".join(f"word{i}" for i in range(700))[:4096]  # the longest text chatlab carries
    room.driver.send_msg(1, {"type": "say", "text": text})
    lines = room.said(2)  # (Room.said checks that every line is within 512 bytes)
    assert len(lines) >= 9
    assert "".join(words(line)[2][1] for line in lines) == text


def test_each_refusal_is_the_numeric_an_irc_client_expects():
    room = Room(limits=Limits(rate_limit=0))
    room.driver.register(1, "ada")
    room.irc(2)
    asked = {
        b"PRIVMSG nobody :hi": ("401", ["bob", "nobody", "No such nick/channel"]),
        b"PRIVMSG #nowhere :hi": ("404", ["bob", "#nowhere"]),
        b"PRIVMSG": ("411", ["bob"]),
        b"PRIVMSG #lobby": ("412", ["bob"]),
        b"PRIVMSG #lobby :   ": ("412", ["bob"]),  # blank after cleaning: the core's bad_text
        b"PART #nowhere": ("442", ["bob", "#nowhere"]),
        b"JOIN lobby": ("403", ["bob", "lobby"]),
        b"JOIN #a key": ("JOIN", ["#a"]),  # a channel key is ignored: rooms have none
        b"JOIN #bad!room": ("403", ["bob", "#bad!room"]),
        b"JOIN": ("461", ["bob", "JOIN"]),
        b"TOPIC #lobby :new": ("482", ["bob", "#lobby"]),
        b"TOPIC #nowhere": ("403", ["bob", "#nowhere"]),
        b"DANCE": ("421", ["bob", "DANCE"]),
        b"PING": ("409", ["bob"]),
        b"MODE ada": ("502", ["bob"]),
        b"MODE #lobby +o ada": ("482", ["bob", "#lobby"]),
    }
    for line, (verb, params) in asked.items():
        got = room.send(2, line + b"\r\n")
        assert got, f"no answer to {line!r}"
        _, answer, answered = words(got[0])
        assert (answer, answered[:len(params)]) == (verb, params), f"{line!r} answered with {got}"
    assert room.send(2, b"NOTICE nobody :hi\r\nNOTICE #nowhere :hi\r\n") == []  # never an answer to a NOTICE


def test_too_many_rooms_is_405():
    room = Room(limits=Limits(max_rooms_per_user=2))
    room.irc(1)
    got = room.send(1, b"JOIN #a,#b\r\n")
    assert words(got[-1])[1] == "405" and "#b" in got[-1]


def test_names_who_whois_list_ison_userhost_and_topic_are_answered_from_the_core():
    room = Room(limits=Limits(rate_limit=0))
    room.driver.register(1, "ada.l")
    room.irc(2)
    room.driver.send_msg(1, {"type": "join", "room": "games"})
    assert [words(x)[2][1:] for x in room.send(2, b"NAMES #games,#lobby,#none\r\n")] == [
        ["=", "#games", "ada|l"], ["=", "#lobby", "ada|l bob"], ["#games,#lobby,#none", "End of /NAMES list."]]
    assert [words(x)[1] for x in room.send(2, b"NAMES\r\n")] == ["353", "353", "366"]
    assert [words(x)[2][1:] for x in room.send(2, b"LIST\r\n")] == [
        ["Channel", "Users  Name"], ["#games", "1", ""], ["#lobby", "2", ""], ["End of /LIST"]]
    who = room.send(2, b"WHO #lobby\r\n")
    assert [words(x)[2][5] for x in who[:-1]] == ["ada|l", "bob"] and words(who[-1])[1] == "315"
    assert [words(x)[2][5] for x in room.send(2, b"WHO ada*\r\n")[:-1]] == ["ada|l"]
    assert [words(x)[1] for x in room.send(2, b"WHOIS ada|l\r\n")] == ["311", "312", "318"]
    assert [words(x)[1] for x in room.send(2, b"WHOIS nobody\r\n")] == ["401", "318"]
    assert words(room.send(2, b"ISON nobody ADA|L bob\r\n")[0])[2] == ["bob", "ada|l bob"]
    assert words(room.send(2, b"USERHOST ada|l\r\n")[0])[2] == ["bob", "ada|l=+ada|l@chatlab"]
    assert words(room.send(2, b"TOPIC #games\r\n")[0])[1:] == ("331", ["bob", "#games", "No topic is set"])
    assert words(room.send(2, b"MODE #games\r\n")[0])[2] == ["bob", "#games", "+n"]
    assert words(room.send(2, b"MODE bob\r\n")[0])[2] == ["bob", "+"]
    assert room.send(2, b"MODE bob +i\r\n") == []  # no user modes: nothing changes, nothing to say
    assert words(room.send(2, b"AWAY :lunch\r\n")[0])[1] == "306"
    assert [words(x)[1] for x in room.send(2, b"MOTD\r\n")][0] == "375"
    assert words(room.send(2, b"VERSION\r\n")[0])[1] == "351"
    assert words(room.send(2, b"HELP\r\n")[0])[1] == "NOTICE"


def test_history_on_joining_comes_as_notices_not_as_new_messages():
    room = Room()
    room.driver.register(1, "ada")
    room.driver.send_msg(1, {"type": "say", "text": "before you came"})
    got = room.irc(2).decode().split("\r\n")[:-1]
    notices = [words(x) for x in got if words(x)[1] == "NOTICE"]
    assert [n[0] for n in notices] == ["chatlab.server"] * 3 and all(n[2][0] == "#lobby" for n in notices)
    assert notices[1][2][1].endswith("<ada> before you came")
    assert "PRIVMSG" not in [words(x)[1] for x in got]


# ------------------------------------------------------- limits and defences


def test_the_server_pings_a_quiet_client_and_a_pong_keeps_it():
    room = Room(limits=Limits(ping_interval=30, idle_timeout=100))
    room.irc(1)
    room.driver.tick(31)
    assert room.said(1) == ["PING :chatlab.server"]
    assert room.send(1, b"PONG :chatlab.server\r\n") == []
    room.driver.tick(60)
    assert room.said(1) == ["PING :chatlab.server"]  # silence again: pinged again, not closed
    room.driver.tick(101)
    assert words(room.said(1)[-1])[1] == "ERROR" and room.driver.closed[1] == "idle"


def test_quit_is_answered_with_error_and_the_room_sees_a_quit():
    room = Room()
    room.driver.register(1, "ada")
    room.irc(2)
    room.driver.frames(1)
    assert room.send(2, b"QUIT :gone fishing\r\n") == ["ERROR :Closing link: bob (goodbye)"]
    assert room.driver.closed[2] == "quit"
    assert room.driver.frames(1) == [{"type": "left", "name": "bob", "room": "lobby", "reason": "quit",
                                      "text": "gone fishing"}]


def test_an_overlong_line_gets_417_then_error_and_the_room_carries_on():
    room = Room()
    room.driver.register(1, "ada")
    room.irc(2)
    room.irc(3, b"NICK cy\r\nUSER cy 0 * :Cy\r\n")
    room.said(2)
    got = room.send(3, b"PRIVMSG #lobby :last words\r\nPRIVMSG #lobby :" + b"x" * 600)
    assert [words(x)[1] for x in got] == ["417", "ERROR"] and room.driver.closed[3] == "protocol_error"
    assert room.said(2) == [":cy!cy@chatlab PRIVMSG #lobby :last words", ":cy!cy@chatlab QUIT :Protocol error"]


def test_registration_times_out_with_an_error_line():
    room = Room(limits=Limits(register_timeout=60))
    room.irc(1, b"NICK slow\r\n")
    room.driver.tick(61)
    assert words(room.said(1)[-1])[1] == "ERROR" and room.driver.closed[1] == "register_timeout"


def test_a_flood_is_rate_limited_then_cut_off():
    room = Room(limits=Limits(rate_limit=1, rate_burst=5, flood_limit=10))
    room.irc(1)  # NICK and USER spent two of the five
    got = room.send(1, b"".join(b"PRIVMSG #lobby :spam %d\r\n" % i for i in range(20)))
    assert [words(x)[1] for x in got] == ["NOTICE"] * 9 + ["ERROR"]
    assert "rate_limited" in got[0] and room.driver.closed[1] == "flooding"


def test_pass_carries_the_password_of_a_name_with_an_account():
    accounts = Accounts({name_key("ada"): ("ada", hash_password("lovelace", n=1 << 10))}, required=False)
    room = Room(accounts=accounts, limits=Limits(auth_delay=0))
    assert verbs(room.irc(1, b"NICK ada\r\nUSER ada 0 * :Ada\r\n")) == ["464"]  # no PASS: told, may try again
    assert words(room.send(1, b"PASS lovelace\r\nNICK ada\r\n")[0])[1] == "001"
    wrong = Room(accounts=accounts, limits=Limits(auth_delay=0))
    assert verbs(wrong.irc(1, b"PASS babbage\r\nNICK ada\r\nUSER ada 0 * :Ada\r\n")) == ["464"]
    right = Room(accounts=accounts)
    assert verbs(right.irc(1, b"PASS lovelace\r\nNICK ada\r\nUSER ada 0 * :Ada\r\n"))[0] == "001"
    guest = Room(accounts=accounts)
    assert verbs(guest.irc(1, b"NICK bob\r\nUSER bob 0 * :Bob\r\n"))[0] == "001"  # --guests: no account, no PASS


def test_the_same_session_fed_one_byte_at_a_time_gets_the_same_answers():
    session = REGISTER + b"JOIN #a,#b\r\nPRIVMSG #a :hi\r\nNAMES #a\r\nPING :t\r\nWHOIS bob\r\nQUIT\r\n"
    whole = Room()
    expected = whole.irc(1, session).decode().split("\r\n")[:-1]
    assert [words(x)[1] for x in expected][-7:] == ["353", "366", "PONG", "311", "312", "318", "ERROR"]
    one = Room()
    one.irc(1, None)
    for i in range(len(session)):
        one.driver.send(1, session[i:i + 1])
    assert one.said(1) == expected
    assert one.driver.closed[1] == "quit"


def test_a_refusal_at_the_door_is_an_error_line():
    room = Room(limits=dataclasses.replace(Limits(), max_clients=1))
    room.irc(1)
    driver = room.driver
    driver.inbox[2] = bytearray()
    driver.apply(driver.core.connect(2, "10.9.9.9:1", driver.now, IrcDialect(driver.core.limits)))
    assert driver.take(2).startswith(b"ERROR :Closing link: the server is full") and driver.closed[2] == "server_full"


def test_parse_may_answer_by_itself():
    dialect = IrcDialect(Limits())
    assert isinstance(dialect.parse(b"PING :x"), Reply)
    assert dialect.parse(b"PONG :x") == {"type": "pong"}


def test_quit_is_heard_even_over_the_rate_limit():
    room = Room(limits=Limits(rate_limit=1, rate_burst=3, flood_limit=0))
    room.irc(1)  # NICK and USER spent two of the three
    got = room.send(1, b"PRIVMSG #lobby :a\r\nPRIVMSG #lobby :b\r\nQUIT\r\n")
    assert [words(x)[1] for x in got] == ["NOTICE", "ERROR"]  # b was dropped; the QUIT was not
    assert room.driver.closed[1] == "quit"


# ------------------------------------------------------------------ fuzzing

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

VERBS = ["NICK", "USER", "PASS", "CAP", "JOIN", "PART", "PRIVMSG", "NOTICE", "NAMES", "LIST", "WHO", "WHOIS",
         "ISON", "USERHOST", "TOPIC", "MODE", "PING", "PONG", "AWAY", "MOTD", "VERSION", "HELP", "QUIT", "KICK", "X"]
WORD = st.text(alphabet=st.sampled_from(list("ab#&,:|.*!@ \x01\x1b\x00é名") + ["\u202e"]), max_size=12)
LONG = st.text(alphabet=st.sampled_from(list("xy \r:#é")), min_size=100, max_size=260)  # echoes near the limit
LINE = st.builds(lambda verb, params: " ".join([verb, *params]).encode("utf-8"),
                 st.sampled_from(VERBS) | st.text(max_size=5), st.lists(WORD | LONG, max_size=5))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(2, 3), LINE | st.binary(max_size=80)), max_size=40), st.integers(1, 40))
def test_any_lines_from_irc_clients_get_answers_that_irc_can_read(lines, cut):
    room = Room(limits=Limits(rate_limit=0))
    room.driver.register(1, "ada")
    room.irc(2)
    room.irc(3, None)
    for cid, line in lines:
        data = line + b"\r\n"
        for i in range(0, len(data), cut):  # in pieces, as TCP may cut them
            room.driver.send(cid, data[i:i + cut])
        for who in (2, 3):
            got = bytes(room.driver.inbox.get(who, b""))
            assert got == b"" or got.endswith(b"\r\n"), got[-80:]
            assert all(len(x) + 2 <= LINE_LIMIT for x in got.split(b"\r\n")), "a line over 512 bytes"
            inside = got.replace(b"\r\n", b"")
            assert b"\n" not in inside and b"\r" not in inside and b"\0" not in inside, "CR, LF or NUL inside a line"
    assert "server_error" not in room.driver.closed.values(), room.driver.closed
    room.driver.frames(1)  # the frames client can still read everything it was sent


def test_echoes_and_reasons_too_long_for_a_line_are_shortened_and_say_so():
    room = Room(limits=Limits(rate_limit=0))
    room.driver.register(1, "ada")
    room.irc(2)
    [pong] = room.send(2, b"PING " + b"x" * 505 + b"\r\n")  # a 510-byte line: at the limit
    assert pong.endswith("x...") and len(pong) + 2 == LINE_LIMIT
    [nak] = room.send(2, b"CAP REQ :" + b"cap " * 125 + b"\r\n")
    assert nak.endswith("...") and len(nak) + 2 <= LINE_LIMIT
    room.driver.send_msg(1, {"type": "join", "room": "games"})
    room.send(2, b"JOIN #games\r\n")
    room.driver.send_msg(1, {"type": "leave", "room": "games", "text": "bye " * 1000})  # a frames client's farewell
    [part] = room.said(2)
    assert part.startswith(":ada!ada@chatlab PART #games :bye bye") and part.endswith("...")
