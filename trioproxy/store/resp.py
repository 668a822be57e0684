"""RESP2 without I/O: command encoding, reply parsing, connection URLs, Lua scripts, errors.

Exceptions::

    RedisError            an error reply from the server (``.code`` = its first word, e.g. NOSCRIPT)
    └── RedisUnavailable  no reply can be had: not connected, connection lost, too many pending
        └── RedisTimeout  no reply within ``call_timeout`` (the command may still be applied)
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "Arg",
    "RedisError",
    "RedisTimeout",
    "RedisURL",
    "RedisUnavailable",
    "ReplyReader",
    "Script",
    "encode_command",
]

Arg = str | bytes | int | float


class RedisError(Exception):
    """An error reply (``-ERR ...``) from the server, or any failure of this client."""

    @property
    def code(self) -> str:
        """The error code, the reply's first word by Redis convention: ``ERR``, ``NOSCRIPT``..."""
        text = str(self)
        return text.split(" ", 1)[0] if text else ""


class RedisUnavailable(RedisError):
    """The command got no reply: not connected, connection lost, or too many commands pending.

    If the command was already sent, the server may have applied it.
    """


class RedisTimeout(RedisUnavailable):
    """No reply within the client's ``call_timeout``; the server may still apply the command."""


class Script:
    """A Lua script and its SHA1, for :meth:`RedisClient.evalsha`."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"Script(sha={self.sha[:12]}...)"


def _to_bytes(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bool):  # bool is an int subclass; "True" is almost surely a bug
        raise TypeError("bool is not a valid Redis argument; pass 0/1 or a string")
    if isinstance(arg, int):
        return b"%d" % arg
    if isinstance(arg, float):
        return repr(arg).encode()
    raise TypeError(f"invalid Redis argument type {type(arg).__name__}")


def encode_command(args: Sequence[Arg]) -> bytes:
    """One command as a RESP2 array of bulk strings."""
    if not args:
        raise ValueError("empty Redis command")
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):  # inlined fast paths: this runs for every command
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, int) and not isinstance(arg, bool):
            data = b"%d" % arg
        else:
            data = _to_bytes(arg)
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class ReplyReader:
    """Incremental RESP2 parser (hiredis). Error replies come out as :class:`RedisError` values."""

    _INCOMPLETE = False  # hiredis' "not enough data" marker; RESP2 has no boolean replies

    def __init__(self) -> None:
        import hiredis  # (a gateway without Redis never loads it)

        self._reader = hiredis.Reader(replyError=RedisError)

    def feed(self, data: bytes | bytearray) -> None:
        self._reader.feed(data)  # type: ignore[arg-type]  # hiredis takes any buffer

    def replies(self) -> list[Any]:
        """Every complete reply fed so far. Raises ``hiredis.ProtocolError`` on garbage."""
        out = []
        while (reply := self._reader.gets()) is not self._INCOMPLETE:
            out.append(reply)
        return out


@dataclass(frozen=True, slots=True)
class RedisURL:
    """``redis[s]://[[user]:password@]host[:port][/db]`` parsed; ``repr`` hides the password."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> RedisURL:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(
                f"Redis URL must start with redis:// or rediss://, got {parts.scheme!r}"
            )
        path = parts.path.lstrip("/")
        try:
            db = int(path) if path else 0
        except ValueError:
            raise ValueError(f"Redis URL database must be a number, got {path!r}") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=parts.scheme == "rediss",
        )

    def handshake(self) -> list[bytes]:
        """Encoded commands to send first on every connection: AUTH and SELECT if needed."""
        cmds = []
        if self.password is not None:
            auth: list[Arg] = ["AUTH", self.password]
            if self.username:
                auth.insert(1, self.username)
            cmds.append(encode_command(auth))
        if self.db:
            cmds.append(encode_command(["SELECT", self.db]))
        return cmds

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context() if self.tls else None

    def __repr__(self) -> str:
        auth = f"{self.username or ''}:***@" if self.password is not None else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"
