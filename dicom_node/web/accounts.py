"""Dashboard accounts: users with a role, Argon2id password hashes (argon2-cffi), sessions and one-time
login links. The only module that writes `users`, `web_sessions` and `login_tokens`.

Session cookies and login links carry a random token; the database keeps only its sha256, so a copy of
the database does not let anyone log in. Each session has its own CSRF token for the forms.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select

from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import LoginToken, User, WebSession

ADMIN = "admin"
READER = "reader"
ROLES = (ADMIN, READER)
MIN_PASSWORD = 10
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(ValueError):
    """A user cannot be added as asked; the message says why."""


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


@dataclass(frozen=True)
class SessionInfo:
    account: Account
    csrf_token: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_new_user(name: str, role: str, password: str) -> list[str]:
    problems = []
    if not _NAME_RE.match(name):
        problems.append(f"user name {name!r}: 1-64 letters, digits or . _ @ -, starting with a letter or digit")
    if role not in ROLES:
        problems.append(f"role {role!r}: must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        problems.append(f"password: at least {MIN_PASSWORD} characters")
    return problems


def add_user(db: Database, name: str, role: str, password: str) -> Account:
    """Create a user; AccountError with every problem (bad name, role, short password, name taken)."""
    problems = check_new_user(name, role, password)
    if problems:
        raise AccountError("; ".join(problems))
    with db.write() as session:
        if session.scalar(select(User.id).where(User.name == name)) is not None:
            raise AccountError(f"user {name!r} already exists")
        user = User(name=name, role=role, password_hash=_hasher.hash(password), created_at=utcnow())
        session.add(user)
        session.flush()
        return Account(user.id, user.name, user.role)


def ensure_user(db: Database, name: str, role: str) -> Account:
    """The user `name`, created with a random password (never shown) when missing: for login links."""
    with db.read() as session:
        user = session.scalar(select(User).where(User.name == name))
        if user is not None:
            return Account(user.id, user.name, user.role)
    return add_user(db, name, role, secrets.token_urlsafe(24))


def authenticate(db: Database, name: str, password: str) -> Account | None:
    with db.read() as session:
        user = session.scalar(select(User).where(User.name == name))
        stored = user.password_hash if user is not None and not user.disabled else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if user is None or user.disabled:
            return None
        account = Account(user.id, user.name, user.role)
        rehash = _hasher.check_needs_rehash(stored)
    if rehash:
        with db.write() as session:
            row = session.get(User, account.id)
            if row is not None:
                row.password_hash = _hasher.hash(password)
    return account


def start_session(db: Database, account: Account, hours: float) -> tuple[str, str]:
    """A new session for `account`: (cookie token, CSRF token). Expired sessions are swept here."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    with db.write() as session:
        session.execute(delete(WebSession).where(WebSession.expires_at < now))
        session.add(WebSession(id=_digest(token), user_id=account.id, csrf_token=csrf, created_at=now,
                               expires_at=now + timedelta(hours=hours)))
    return token, csrf


def session_for(db: Database, token: str | None) -> SessionInfo | None:
    """The live session of a cookie token, or None (no token, unknown, expired, user disabled)."""
    if not token:
        return None
    with db.read() as session:
        row = session.execute(
            select(WebSession, User).join(User, User.id == WebSession.user_id).where(WebSession.id == _digest(token))
        ).first()
        if row is None:
            return None
        web_session, user = row
        if web_session.expires_at < utcnow() or user.disabled:
            return None
        return SessionInfo(Account(user.id, user.name, user.role), web_session.csrf_token)


def end_session(db: Database, token: str | None) -> None:
    if token:
        with db.write() as session:
            session.execute(delete(WebSession).where(WebSession.id == _digest(token)))


def login_link_token(db: Database, account: Account, hours: float = 24.0) -> str:
    """A token for one login without a password (`/login/once/TOKEN`), valid `hours` and used once."""
    token = secrets.token_urlsafe(32)
    with db.write() as session:
        session.add(LoginToken(id=_digest(token), user_id=account.id, expires_at=utcnow() + timedelta(hours=hours)))
    return token


def use_login_token(db: Database, token: str) -> Account | None:
    """The account of an unused, unexpired login token, which is used up; None otherwise."""
    now = utcnow()
    with db.write() as session:
        row = session.get(LoginToken, _digest(token))
        if row is None or row.used_at is not None or row.expires_at < now:
            return None
        row.used_at = now
        user = session.get(User, row.user_id)
        if user is None or user.disabled:
            return None
        return Account(user.id, user.name, user.role)


def users(db: Database) -> list[Account]:
    with db.read() as session:
        return [Account(u.id, u.name, u.role) for u in session.scalars(select(User).order_by(User.name))]
