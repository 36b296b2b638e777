"""Accounts: how passwords are kept, the accounts file, and the commands that use it."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import subprocess
import sys

import pytest

from chatlab.accounts import (
    MAX_PASSWORD,
    Accounts,
    AccountsError,
    add_account,
    check_password,
    hash_password,
    read_accounts,
    remove_account,
)
from chatlab.client import ChatClient, ChatError
from chatlab.protocol import name_key
from chatlab.servers import ThreadedServer
from chatlab.testing import frames_client

pytestmark = pytest.mark.timeout(60)

CHATLAB = [sys.executable, "-m", "chatlab"]
FAST = 1 << 10  # a cheap scrypt cost for tests that make many hashes; the format is the same


# ---------------------------------------------------------------- hashing


def test_a_hash_is_salted_and_carries_its_parameters():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second  # a new salt each time: equal passwords do not look equal
    scheme, n, r, p, salt, digest = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert "correct horse" not in first
    assert check_password("correct horse", first) and check_password("correct horse", second)
    assert not check_password("correct horse!", first) and not check_password("", first)


def test_pbkdf2_hashes_are_checked_too():
    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", b"pw", salt, 1000, 32)
    stored = f"pbkdf2_sha256$1000${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    assert check_password("pw", stored) and not check_password("px", stored)


@pytest.mark.parametrize("stored", ["", "plain", "scrypt$x$8$1$AA==$AA==", "md5$abc", "scrypt$16384$8$1$!!$??"])
def test_a_damaged_hash_never_matches_and_never_raises(stored):
    assert not check_password("anything", stored)


def test_an_overlong_password_is_refused_without_matching_its_prefix():
    password = "p" * MAX_PASSWORD
    accounts = Accounts({name_key("ada"): ("ada", hash_password(password, n=FAST))})
    assert accounts.verify(name_key("ada"), password)
    assert not accounts.verify(name_key("ada"), password + "x")
    assert not accounts.verify(name_key("nobody"), password)


# --------------------------------------------------------------- the file


def test_add_change_list_and_remove(tmp_path):
    path = str(tmp_path / "users.txt")
    assert add_account(path, "ada", "lovelace") is False
    assert add_account(path, "Bob", "builder") is False
    assert add_account(path, "ADA", "babbage") is True  # the same name: its password changes
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # the owner's alone
    text = open(path).read()
    assert text.startswith("# chatlab accounts") and "lovelace" not in text and "babbage" not in text
    accounts = Accounts.load(path)
    assert sorted(name for name, _ in accounts.entries.values()) == ["ADA", "Bob"]
    assert accounts.verify(name_key("ada"), "babbage") and not accounts.verify(name_key("ada"), "lovelace")
    assert remove_account(path, "ada") is True and remove_account(path, "ada") is False
    assert list(read_accounts(path)) == [name_key("bob")]
    assert not [f for f in os.listdir(tmp_path) if f != "users.txt"]  # no temporary file left behind


@pytest.mark.parametrize("content, problem", [
    ("ada\n", "line 1: expected 'NAME HASH'"),
    ("ada scrypt$nonsense\n", "line 1: expected 'NAME HASH'"),
    ("# fine\n\nbad!name " + hash_password("x", n=FAST) + "\n", "line 3: a name may use only"),
    ("ada " + hash_password("x", n=FAST) + "\nADA " + hash_password("y", n=FAST) + "\n", "line 2: a second account"),
])
def test_a_bad_accounts_file_is_explained(tmp_path, content, problem):
    path = tmp_path / "users.txt"
    path.write_text(content)
    with pytest.raises(AccountsError, match=re.escape(problem)):
        read_accounts(str(path))


def test_a_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(AccountsError, match="chatlab users add NAME"):
        read_accounts(str(tmp_path / "nowhere.txt"))


@pytest.mark.parametrize("name, password", [("two words", "pw"), ("p\u0430ypal", "pw"), ("ada", "")])
def test_bad_names_and_empty_passwords_are_refused(tmp_path, name, password):
    with pytest.raises(AccountsError):
        add_account(str(tmp_path / "users.txt"), name, password)


# ----------------------------------------------------------- the commands


def users(*args, password: str | None = None, cwd=None):
    return subprocess.run([*CHATLAB, "users", *args], input=password, capture_output=True, text=True,
                          timeout=30, cwd=cwd)


def test_chatlab_users_add_reads_the_password_from_a_pipe(tmp_path):
    path = str(tmp_path / "users.txt")
    done = users("add", "ada", "--file", path, password="lovelace\n")
    assert done.returncode == 0 and "added ada" in done.stdout
    done = users("add", "ada", "--file", path, password="babbage\n")
    assert done.returncode == 0 and "changed the password of ada" in done.stdout
    assert users("list", "--file", path).stdout.split() == ["ada"]
    assert Accounts.load(path).verify(name_key("ada"), "babbage")
    bad = users("add", "no good", "--file", path, password="x\n")
    assert bad.returncode == 1 and "cannot make an account" in bad.stderr
    assert users("add", "--file", path).returncode == 2  # no NAME
    assert users("remove", "zed", "--file", path).returncode == 1
    assert users("remove", "ada", "--file", path).returncode == 0
    assert users("list", "--file", path).stdout == ""


def serve(*args):
    return subprocess.Popen([*CHATLAB, "serve", "--port", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def children():
    started: list[subprocess.Popen] = []
    yield started.append
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def address_of(proc) -> tuple[str, int]:
    line = proc.stdout.readline()
    match = re.search(r"listening on ([\d.]+):(\d+)", line)
    assert match, f"no address in {line!r}"
    return match.group(1), int(match.group(2))


@pytest.mark.parametrize("guests", [False, True])
def test_chatlab_serve_with_users(tmp_path, children, guests):
    path = str(tmp_path / "users.txt")
    add_account(path, "ada", "lovelace")
    proc = serve("--users", path, "--auth-delay", "0.2", *(["--guests"] if guests else []))
    children(proc)
    address = address_of(proc)
    assert "1 accounts from" in proc.stdout.readline()
    with ChatClient(*address, name="ada", password="lovelace") as ada:
        assert ada.name == "ada"
    with pytest.raises(ChatError, match="wrong name or password"):
        ChatClient(*address, name="ada", password="babbage")
    if guests:
        with ChatClient(*address, name="zed") as zed:  # no account, no password needed
            assert zed.name == "zed"
    else:
        with pytest.raises(ChatError, match="auth_required"):
            ChatClient(*address, name="zed")


@pytest.mark.parametrize("args, message", [
    (["--users", "/nonexistent/users.txt"], "no accounts file"),
    (["--guests"], "--guests only makes sense with --users"),
    (["--rate-limit", "-1"], "rate_limit must be 0 (off) or positive"),
    (["--rate-limit", "5", "--rate-burst", "0"], "rate_burst must be at least 1"),
])
def test_chatlab_serve_explains_bad_settings(args, message):
    done = subprocess.run([*CHATLAB, "serve", "--port", "0", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and message in done.stderr


def test_chatlab_chat_takes_the_password_from_the_environment(tmp_path, children):
    accounts = Accounts({name_key("bob"): ("bob", hash_password("builder", n=FAST))})
    with ThreadedServer(port=0, accounts=accounts) as server:
        accounts.entries[name_key("watcher")] = ("watcher", hash_password("w", n=FAST))
        watcher = frames_client(server.address, None)
        try:
            watcher.send_frame({"type": "hello", "name": "watcher", "password": "w"})
            watcher.expect("welcome")
            proc = subprocess.Popen([*CHATLAB, "chat", "--name", "bob", "%s:%d" % server.address],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=dict(os.environ, CHATLAB_PASSWORD="builder"))
            children(proc)
            watcher.wait_frame(lambda m: m.get("type") == "joined" and m.get("name") == "bob", "bob joining")
            proc.stdin.write("hello with a password\n")
            proc.stdin.close()
            watcher.wait_frame(lambda m: m.get("type") == "message" and m.get("from") == "bob", "bob's message")
            assert proc.wait(timeout=10) == 0
        finally:
            watcher.close()
