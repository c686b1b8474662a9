"""Where things are on a server: websocket and HTTP URLs built from the one URL a user gives."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

# persistent://tenant/namespace/topic, or tenant/namespace/topic, or a bare topic name.
_FULL_NAME = re.compile(r"^(?:(?P<persistence>persistent|non-persistent)://)?(?P<tenant>[^/]+)/(?P<ns>[^/]+)/(?P<topic>[^/]+)$")
_BARE_NAME = re.compile(r"^[^/]+$")


@dataclass(frozen=True)
class TopicName:
    """A topic as Pulsar names it. Switchyard accepts and ignores persistence, tenant and namespace:
    its topics are one namespace, so a bare name is enough."""

    topic: str
    persistence: str = "persistent"
    tenant: str = "public"
    namespace: str = "default"

    @classmethod
    def parse(cls, name: str) -> TopicName:
        if _BARE_NAME.match(name):
            return cls(name)
        match = _FULL_NAME.match(name)
        if match is None:
            raise ValueError(f"not a topic name: {name!r} (a name, or persistent://tenant/namespace/topic)")
        return cls(match["topic"], match["persistence"] or "persistent", match["tenant"], match["ns"])

    @property
    def path(self) -> str:
        return "/".join(quote(part, safe="") for part in (self.persistence, self.tenant, self.namespace, self.topic))


@dataclass(frozen=True)
class Server:
    """A server's base URLs, from ``ws://``, ``wss://``, ``http://`` or ``https://`` plus host, port and
    an optional path prefix (a server behind a proxy at ``/switchyard``)."""

    ws: str
    http: str

    @classmethod
    def parse(cls, url: str) -> Server:
        parts = urlsplit(url)
        secure = {"ws": False, "http": False, "wss": True, "https": True}.get(parts.scheme)
        if secure is None or not parts.netloc:
            raise ValueError(f"not a server URL: {url!r} (ws://host:port, or http://, wss://, https://)")
        prefix = parts.path.rstrip("/")
        ws = urlunsplit(("wss" if secure else "ws", parts.netloc, prefix, "", ""))
        http = urlunsplit(("https" if secure else "http", parts.netloc, prefix, "", ""))
        return cls(ws, http)

    def pulsar(self, endpoint: str, topic: TopicName, subscription: str | None = None,
               params: dict[str, str] | None = None) -> str:
        """``/ws/v2/<endpoint>/<persistence>/<tenant>/<namespace>/<topic>[/<subscription>]``."""
        url = f"{self.ws}/ws/v2/{endpoint}/{topic.path}"
        if subscription is not None:
            url += "/" + quote(subscription, safe="")
        return _with_query(url, params)

    def dasf(self, topic: str, subscription: str | None = None) -> str:
        """The DASF shape: producer ``/ws/<topic>``, consumer ``/ws/<topic>/<subscription>``."""
        url = f"{self.ws}/ws/{quote(topic, safe='')}"
        return url if subscription is None else f"{url}/{quote(subscription, safe='')}"

    def websocket(self, path: str, params: dict[str, str] | None = None) -> str:
        return _with_query(f"{self.ws}/{path.lstrip('/')}", params)

    def api(self, path: str, params: dict[str, str] | None = None) -> str:
        return _with_query(f"{self.http}/api/v1/{path.lstrip('/')}", params)


def _with_query(url: str, params: dict[str, str] | None) -> str:
    return f"{url}?{urlencode(params)}" if params else url
