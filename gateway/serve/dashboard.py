"""The marketers' dashboard, served on the ClickHouse port under /dashboard/: its built files, and the login that
lets the page query the analytics views as a [[users]] account.

The page holds no password: it logs in once (POST /dashboard/api/login) and gets a session cookie, random and
HttpOnly, which the ClickHouse interface accepts in place of a password only on requests that also carry the
header ``X-Clicktrail-Dashboard: 1`` (a form or a link from another site cannot set it, so another site cannot
make a browser run queries with the cookie), and then always read-only (clickhouse.py). Every number the page
shows is thus a query through that interface, with the user's sites, settings profile and limits, as the user
could run it with curl. SameSite=Strict keeps the cookie off requests other sites start.

Sessions live in this process's memory, for ``SESSION_IDLE_S`` since their last use; a restart means logging in
again. Wrong passwords count against the client address in the ClickHouse interface's throttle, so a guesser gets
no more tries here than there.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.config import UserConfig
from gateway.warehouse.store import QueryError

#: The built front end (dashboard/dist through a link; see pyproject.toml: package-data).
DIST = Path(__file__).resolve().parent.parent / "_data" / "dashboard"
COOKIE = "clicktrail_session"
#: The request header that makes the ClickHouse interface take the session cookie as credentials.
HEADER = "x-clicktrail-dashboard"
#: A session ends after this long unused.
SESSION_IDLE_S = 12 * 3600
#: Sessions one user may hold (browsers, tabs that logged in anew); the least recently used goes beyond it.
MAX_SESSIONS_PER_USER = 64
#: The longest login body read (a user name and a password).
MAX_LOGIN_BYTES = 16384
#: ClickHouse's code for a refusal by the failed-login throttle (QUOTA_EXCEEDED), 429 here.
THROTTLED = 201

#: For the pages: scripts and everything else from the gateway only; inline styles are allowed for ECharts, which
#: styles its tooltips with style attributes; no framing (clickjacking), no referrer to links followed.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:;"
                               " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: For the API's answers (and the ClickHouse interface's to the dashboard): never stored by a cache.
API_HEADERS = {**PAGE_HEADERS, "Cache-Control": "no-store"}

#: Checks a password as the ClickHouse interface does: (request, headers, () -> (user, password)) -> the user, or
#: QueryError (516: wrong; THROTTLED: too many wrong tries, with Retry-After put in headers).
Login = Callable[[Request, dict[str, str], Callable[[], tuple[str, str]]], UserConfig]


@dataclass
class _Session:
    user: str
    expires: float


class Sessions:
    """The logged-in sessions, by cookie value. Used on the event loop only, so without a lock."""

    def __init__(self) -> None:
        self._open: dict[str, _Session] = {}

    def open(self, user: str) -> str:
        now = time.monotonic()
        self._open = {token: s for token, s in self._open.items() if s.expires > now}
        mine = sorted((s.expires, token) for token, s in self._open.items() if s.user == user)
        for _, token in mine[:max(0, len(mine) - MAX_SESSIONS_PER_USER + 1)]:
            del self._open[token]
        token = secrets.token_urlsafe(32)
        self._open[token] = _Session(user, now + SESSION_IDLE_S)
        return token

    def user(self, token: str | None) -> str | None:
        """The user of the session ``token``, whose idle time starts again; None if there is no such session."""
        session = self._open.get(token or "")
        now = time.monotonic()
        if session is None or session.expires <= now:
            return None
        session.expires = now + SESSION_IDLE_S
        return session.user

    def close(self, token: str | None) -> None:
        self._open.pop(token or "", None)


class Dashboard:
    """The dashboard's routes, for ``users`` of a gateway with the sites ``site_ids``; ``login`` checks passwords
    as the ClickHouse interface does, with its throttle."""

    def __init__(self, users: dict[str, UserConfig], site_ids: list[str], login: Login) -> None:
        self.users = users
        self.site_ids = site_ids
        self.login_check = login
        self.sessions = Sessions()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/dashboard/api/login", self.login, methods=["POST"]),
            Route("/dashboard/api/logout", self.logout, methods=["POST"]),
            Route("/dashboard/api/session", self.session, methods=["GET"]),
            # /dashboard redirects to /dashboard/ (the router adds the slash), which is index.html.
            Mount("/dashboard", DashboardFiles(directory=DIST, html=True, check_dir=False), name="dashboard"),
        ]

    def user_of(self, request: Request) -> UserConfig | None:
        """The user whose session cookie ``request`` carries, if the session is open and the user still exists."""
        name = self.sessions.user(request.cookies.get(COOKIE))
        return self.users.get(name) if name is not None else None

    async def login(self, request: Request) -> Response:
        credentials = _credentials(await _read_limited(request))
        if credentials is None:
            return _json({"error": 'Send JSON: {"user": "...", "password": "..."}.'}, 400)
        headers: dict[str, str] = {}
        try:
            user = self.login_check(request, headers, lambda: credentials)
        except QueryError as exc:
            if exc.code == THROTTLED:
                return _json({"error": "Too many wrong passwords from this address; wait and try again."}, 429,
                             headers)
            return _json({"error": "Wrong user name or password."}, 401)
        response = _json(self._describe(user))
        response.set_cookie(COOKIE, self.sessions.open(user.name), httponly=True, samesite="strict", path="/")
        return response

    async def logout(self, request: Request) -> Response:
        self.sessions.close(request.cookies.get(COOKIE))
        response = Response(status_code=204, headers=API_HEADERS)
        response.delete_cookie(COOKIE, httponly=True, samesite="strict", path="/")
        return response

    async def session(self, request: Request) -> Response:
        user = self.user_of(request)
        return _json(self._describe(user)) if user else _json({"error": "Not logged in."}, 401)

    def _describe(self, user: UserConfig) -> dict[str, Any]:
        sites = self.site_ids if user.sites is None else [site for site in self.site_ids if site in user.sites]
        return {"user": user.name, "sites": sites, "readonly": user.readonly}


class DashboardFiles(StaticFiles):
    """The built pages, with the pages' security headers; revalidated on every load (by ETag), so a new build is
    seen at once."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update({**PAGE_HEADERS, "Cache-Control": "no-cache"})
        return response


def _credentials(body: bytes | None) -> tuple[str, str] | None:
    try:
        value = orjson.loads(body) if body is not None else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in ("user", "password")):
        return None
    return value["user"], value["password"]


async def _read_limited(request: Request) -> bytes | None:
    """The body, or None when it is longer than a login needs."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BYTES:
            return None
    return bytes(body)


def _json(value: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(value), status, {**API_HEADERS, **(headers or {})}, media_type="application/json")
