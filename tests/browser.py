"""A browser's side of HTTP for tests: cookies kept, redirects shown rather than followed, and the
admin login form posted the way Django's own page posts it (with its CSRF token)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from typing import Any

TIMEOUT_S = 10.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Browser:
    base: str
    jar: CookieJar = field(default_factory=CookieJar)
    # Sent with every request (e.g. X-Forwarded-For, which uvicorn trusts from 127.0.0.1).
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def request(self, path: str, method: str = "GET", body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        request = urllib.request.Request(self.base + path, data=body, method=method,
                                         headers={**self.headers, **(headers or {})})
        try:
            with self.opener.open(request, timeout=TIMEOUT_S) as response:
                return Answer(response.status, _lower(response.headers.items()), response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, _lower(error.headers.items()), error.read())

    def send_json(self, path: str, method: str = "POST", value: Any = None,
                  headers: dict[str, str] | None = None) -> Answer:
        body = json.dumps(value).encode() if value is not None else None
        content = {"Content-Type": "application/json"} if body is not None else {}
        return self.request(path, method, body, {**content, **(headers or {})})

    def csrf_headers(self) -> dict[str, str]:
        """What a same-origin page of the server sends with a write: the token and its own origin."""
        token = self.cookie("csrftoken")
        assert token, "no csrftoken cookie yet"
        return {"X-CSRFToken": token, "Origin": self.base}

    def open_login(self) -> None:
        """Load the admin login page, which sets the CSRF cookie its form posts back."""
        self.request("/admin/login/")

    def post_login(self, username: str, password: str) -> Answer:
        """Post the admin login form as the page would; 302 means logged in."""
        form = {"username": username, "password": password, "next": "/admin/",
                "csrfmiddlewaretoken": self.cookie("csrftoken") or ""}
        return self.request("/admin/login/", "POST", urllib.parse.urlencode(form).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def admin_login(self, username: str, password: str) -> Answer:
        self.open_login()
        return self.post_login(username, password)

    def post_form(self, path: str, form: dict[str, str]) -> Answer:
        """Post an admin form (an action on a change list) as its page would, with the CSRF token."""
        self.request(path)  # the form page, for its CSRF cookie
        body = urllib.parse.urlencode({**form, "csrfmiddlewaretoken": self.cookie("csrftoken") or ""}).encode()
        return self.request(path, "POST", body, {"Content-Type": "application/x-www-form-urlencoded",
                                                 "Referer": self.base + path})
