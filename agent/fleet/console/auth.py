"""Who may use the console: loopback binding, or a password and a session cookie.

The password is read once (``file:PATH`` or the file named by ``--password-file``) and only
its scrypt hash is kept; a login attempt is hashed the same way and compared in constant
time. Sessions are random tokens held in memory (a restart logs everyone out). Every
session, logged in or anonymous on loopback, carries a CSRF token that each POST must echo:
SameSite=Strict cookies plus the token keep other web pages from driving the console.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from dataclasses import dataclass, field

COOKIE = "ea_console"
SESSION_S = 12 * 3600.0
MAX_SESSIONS = 1000
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)


@dataclass(frozen=True)
class PasswordCheck:
    salt: bytes
    digest: bytes

    @classmethod
    def of(cls, password: str) -> PasswordCheck:
        salt = secrets.token_bytes(16)
        return cls(salt, _scrypt(password, salt))

    def matches(self, attempt: str) -> bool:
        return hmac.compare_digest(_scrypt(attempt, self.salt), self.digest)


@dataclass
class Session:
    token: str
    csrf: str
    user: bool  # logged in with the password (False: anonymous, loopback without a password)
    expires: float


@dataclass
class Sessions:
    password: PasswordCheck | None
    ttl_s: float = SESSION_S
    _table: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def login_required(self) -> bool:
        return self.password is not None

    def new(self, *, user: bool) -> Session:
        now = time.monotonic()
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(24), user, now + self.ttl_s
        )
        with self._lock:
            for token in [t for t, s in self._table.items() if s.expires < now]:
                del self._table[token]
            if len(self._table) >= MAX_SESSIONS:  # oldest out: memory stays bounded
                del self._table[min(self._table, key=lambda t: self._table[t].expires)]
            self._table[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            session = self._table.get(token)
            if session is None or session.expires < time.monotonic():
                self._table.pop(token, None)
                return None
            return session

    def end(self, token: str | None) -> None:
        with self._lock:
            self._table.pop(token or "", None)

    def allowed(self, session: Session | None) -> bool:
        """May this session see pages and act?"""
        if session is None:
            return False
        return session.user or not self.login_required

    def login(self, attempt: str) -> Session | None:
        if self.password is None or not self.password.matches(attempt):
            return None
        return self.new(user=True)
