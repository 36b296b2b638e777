"""Accounts: names that need a password, and how passwords are kept.

A server that anyone can join under any free name lets a student talk as
someone else the moment that person is away.  ``chatlab serve --users FILE``
closes that gap: a name with an account can only be taken with its password.

How the passwords are kept matters more than it looks.  The accounts file
will be copied, backed up, left on a shared drive.  So it never holds a
password, only a *salted, slow hash* of it:

* **salted**: 16 random bytes mixed into each hash, so two students with the
  same password get different hashes, and a table of hashes computed in
  advance for common passwords is useless;
* **slow**: ``scrypt`` (RFC 7914) is built to cost time *and memory*, so that
  someone who steals the file and tries a billion passwords pays for each
  one.  The price is paid on every login too; the parameters below are the
  compromise, measured in ``docs/security.md``.

The parameters are stored with each hash, so they can be raised later
without breaking the accounts already made.  PBKDF2-HMAC-SHA256 is the
fallback where ``hashlib.scrypt`` is missing (Python built without a recent
OpenSSL), and files made with it keep working everywhere.

The file is plain text, one account a line, ``NAME HASH``::

    # chatlab accounts: made with "chatlab users add NAME"
    ada scrypt$16384$8$1$<salt, base64>$<hash, base64>

Nothing here touches a socket; it is the chat core that asks ``verify()``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets
import tempfile
from dataclasses import dataclass

from .protocol import check_name, name_key, normalise_name

# scrypt's cost: N (CPU and memory, a power of 2), r (block size), p (parallel
# lanes).  Memory is 128 * N * r bytes: 16 MiB here.  About 40 ms per hash on
# a 2020s laptop core -- unnoticeable for one login, and it caps a thief at
# some tens of guesses a second per core instead of billions.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
PBKDF2_ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
SALT_BYTES = 16
HASH_BYTES = 32
MAX_PASSWORD = 1024  # characters: a longer "password" only makes the server work

HEADER = "# chatlab accounts: one a line, NAME HASH. Manage with: chatlab users add NAME\n"


class AccountsError(Exception):
    """A bad accounts file or a bad name; the message says which line and why."""


# ----------------------------------------------------------------- hashing


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A new salted hash of ``password``, with its parameters, as one string."""
    salt = secrets.token_bytes(SALT_BYTES)
    secret = password.encode("utf-8")
    if hasattr(hashlib, "scrypt"):
        digest = hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r * p, dklen=HASH_BYTES)
        return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"
    digest = hashlib.pbkdf2_hmac("sha256", secret, salt, PBKDF2_ITERATIONS, HASH_BYTES)  # pragma: no cover
    return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${_b64(salt)}${_b64(digest)}"  # pragma: no cover


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` hashes to ``stored`` (made by ``hash_password``)."""
    scheme, *fields = stored.split("$")
    secret = password.encode("utf-8", "surrogatepass")
    try:
        if scheme == "scrypt":
            n, r, p = (int(x) for x in fields[:3])
            salt, wanted = base64.b64decode(fields[3]), base64.b64decode(fields[4])
            got = hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r * p, dklen=len(wanted))
        elif scheme == "pbkdf2_sha256":
            iterations = int(fields[0])
            salt, wanted = base64.b64decode(fields[1]), base64.b64decode(fields[2])
            got = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations, len(wanted))
        else:
            return False
    except (ValueError, IndexError):
        return False
    # compare_digest takes the same time wherever the first difference is, so
    # the time of a "no" does not tell a guesser how much of the hash was right.
    return hmac.compare_digest(got, wanted)


def _check_format(stored: str) -> bool:
    """Whether ``stored`` looks like a hash this module can check (without checking it)."""
    scheme, *fields = stored.split("$")
    try:
        if scheme == "scrypt" and len(fields) == 5:
            n, r, p = (int(x) for x in fields[:3])
            base64.b64decode(fields[3], validate=True), base64.b64decode(fields[4], validate=True)
            return n > 1 and n & (n - 1) == 0 and r > 0 and p > 0
        if scheme == "pbkdf2_sha256" and len(fields) == 3:
            base64.b64decode(fields[1], validate=True), base64.b64decode(fields[2], validate=True)
            return int(fields[0]) > 0
    except ValueError:
        pass
    return False


# --------------------------------------------------------------- the file


def read_accounts(path: str) -> dict[str, tuple[str, str]]:
    """The accounts in ``path``: name key -> (name as shown, hash)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise AccountsError(f"no accounts file {path!r}: make one with 'chatlab users add NAME --file {path}'") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AccountsError(f"cannot read the accounts file {path!r}: {exc}") from None
    accounts: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not _check_format(parts[1]):
            raise AccountsError(f"{path}, line {number}: expected 'NAME HASH' as written by 'chatlab users add'")
        name = normalise_name(parts[0])
        if check_name(name):
            raise AccountsError(f"{path}, line {number}: {check_name(name)}")
        if name_key(name) in accounts:
            raise AccountsError(f"{path}, line {number}: a second account for {name}")
        accounts[name_key(name)] = (name, parts[1])
    return accounts


def write_accounts(path: str, accounts: dict[str, tuple[str, str]]) -> None:
    """Replace ``path`` with these accounts, readable by its owner only.

    Written to a temporary file and renamed over the old one, so that a
    crash half-way never leaves a half-written accounts file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".chatlab-users-", dir=folder, text=True)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(HEADER)
            for name, stored in accounts.values():
                f.write(f"{name} {stored}\n")
        os.chmod(temporary, 0o600)  # mkstemp already made it so; say it anyway
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def add_account(path: str, name: str, password: str) -> bool:
    """Create or change the account ``name``; True if it existed (its password changed)."""
    name = normalise_name(name)
    problem = check_name(name)
    if problem:
        raise AccountsError(f"cannot make an account for {name!r}: {problem}")
    if not password:
        raise AccountsError("the password is empty")
    if len(password) > MAX_PASSWORD:
        raise AccountsError(f"the password is longer than {MAX_PASSWORD} characters")
    accounts = read_accounts(path) if os.path.exists(path) else {}
    existed = name_key(name) in accounts
    accounts[name_key(name)] = (name, hash_password(password))
    write_accounts(path, accounts)
    return existed


def remove_account(path: str, name: str) -> bool:
    """Delete the account ``name``; False if there was none."""
    accounts = read_accounts(path)
    if accounts.pop(name_key(normalise_name(name)), None) is None:
        return False
    write_accounts(path, accounts)
    return True


# ------------------------------------------------------------- the server


@dataclass
class Accounts:
    """What the chat core asks at ``hello``: does this name need a password, and is it right?

    ``required``: every name needs an account (``chatlab serve --users``).
    Without it (``--guests``), names with no account are free to take and
    only the names that have one are protected.
    """

    entries: dict[str, tuple[str, str]]
    required: bool = True

    def __post_init__(self) -> None:
        _decoy()  # made now, not on the first unknown name, which would then answer a hash later

    @classmethod
    def load(cls, path: str, required: bool = True) -> "Accounts":
        return cls(read_accounts(path), required)

    def needs_password(self, key: str) -> bool:
        return self.required or key in self.entries

    def verify(self, key: str, password: str) -> bool:
        """Whether ``password`` is right for the name with this key.

        An unknown name costs the same hash as a known one: otherwise the
        time of the answer would tell a stranger which names have accounts.
        """
        entry = self.entries.get(key)
        fits = len(password) <= MAX_PASSWORD  # never hash an unbounded input
        right = check_password(password if fits else password[:MAX_PASSWORD], entry[1] if entry else _decoy())
        return right and fits and entry is not None


@functools.cache
def _decoy() -> str:
    """A hash of a random password, made once: what an unknown name is checked against."""
    return hash_password(secrets.token_hex(16))
