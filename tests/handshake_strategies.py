"""Hypothesis strategies for websocket handshakes (tests/test_fuzz_handshakes.py): request targets of a
route's own shape (path segments and query parameters) with hostile values, garbage targets, and the
headers a handshake carries (Authorization, Origin, Sec-WebSocket-Protocol, Cookie).

A target is the ASCII text of the request line, as a client sends it: characters past ASCII are
percent-encoded (as UTF-8, or as bytes no UTF-8 decoder takes), and now and then a character a URL
may not hold (a space, a quote, a tab) is sent raw, as a broken client would.
"""

from __future__ import annotations

import string
from urllib.parse import quote

from hypothesis import strategies as st

from tests.frame_strategies import EDGE_INTEGERS, TEXT

# Path segments no route takes as they are: dot segments, encoded slashes and NULs, escapes that are
# no UTF-8 (or half an escape), reserved names, names past TOPIC_NAME_MAX_CHARS (200) and past the
# request head's bound (MAX_REQUEST_HEAD_BYTES, 16 KiB: answered 414).
EDGE_SEGMENTS = ["", ".", "..", "%2e%2e", "%2E", "%00", "a%00b", "%2F", "a%2Fb", "%2f..%2f", "%", "%G0", "%C3%28",
                 "%FF%FE", "%ED%A0%80", "%F0%9F%98%80", "%20", "+", ";", "a;b=c", "~", "*", "x" * 201, "x" * 3000,
                 "x" * 17000, "status", "workers", "work-requests", "status-ping", "a//b", "a/b/c", "%E2%80%AE"]
# Raw characters a request target may not hold, sent now and then as they are (no CR or LF: the
# request would be another one).
RAW = string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "").replace("\x0c", "")
RAW_TEXT = st.text(alphabet=RAW, max_size=30)


# NUL, which PostgreSQL's text refuses (and SQLite's takes): a branch of its own, as it found defects.
NUL = st.sampled_from(["%00", "a%00b"])


def encoded(text: str) -> str:
    """``text`` percent-encoded as a client encodes a path segment or a query value."""
    return quote(text, safe="")


def segments(names: list[str]) -> st.SearchStrategy[str]:
    """One path segment: mostly a valid name (``names``), so that a target's other parts are reached
    with it; else a hostile one, any text encoded, or raw garbage."""
    valid = st.sampled_from(names)
    return st.one_of(valid, valid, valid, valid, st.sampled_from(EDGE_SEGMENTS), NUL, TEXT.map(encoded), RAW_TEXT)


# Pulsar's ints and longs (app/pulsar/params.py reads them as Java does) at and past their bounds,
# and spellings Java does not read.
JAVA_INTEGERS = st.one_of(st.sampled_from(EDGE_INTEGERS).map(str), st.integers().map(str), st.sampled_from(
    ["", "1.0", " 5", "1_000", "0x10", "+1", "-0", "1e3", "%EF%BC%91", "9" * 5000, "NaN"]))
JAVA_BOOLEANS = st.sampled_from(["true", "TRUE", "false", "1", "yes", "", "tru%00e"])
SUBSCRIPTION_TYPES = st.sampled_from(["Exclusive", "Failover", "Shared", "Key_Shared", "shared", "SHARED", ""])
MESSAGE_IDS = st.one_of(st.sampled_from(["earliest", "latest", "Earliest", "", "CAEQAQ==", "0:0:0"]),
                        st.uuids().map(str), st.uuids().map(lambda u: u.hex.upper()))
TIMES = st.one_of(st.datetimes().map(lambda d: d.isoformat()), st.sampled_from(
    ["2000-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59-01:00",
     "9999-12-31T23:59:59.999999", "2000-01-01 01:00", "2000-01-01T00:00:00 01:00", "2000-13-45", "yesterday",
     "1e20", "-1"]))
# Anything at all as a value, encoded or raw.
ANY_VALUE = st.one_of(TEXT.map(encoded), RAW_TEXT, JAVA_INTEGERS, NUL)


def value_of(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A parameter's value: of its own kind (mostly), or anything."""
    return st.one_of(valid, valid, valid, ANY_VALUE)


def queries(params: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[str]:
    """A query string (with its ``?``, or none) of a route's parameters: some of ``params`` with
    values of their kind or any, repeated now and then, among unknown names and empty pairs."""
    names = sorted(params)
    pair = st.one_of(
        *(st.tuples(st.just(name), value_of(params[name])) for name in names),
        st.tuples(st.one_of(TEXT.map(encoded), RAW_TEXT), ANY_VALUE),
    ).map(lambda p: f"{p[0]}={p[1]}")
    bare = st.sampled_from(["", "=", "&", "token", "=x", "a=b=c", "%", "%3D%26"])
    parts = st.lists(st.one_of(pair, pair, pair, bare), max_size=6)
    query = parts.map(lambda ps: "?" + "&".join(ps))
    return st.one_of(st.just(""), query, query, query, RAW_TEXT.map(lambda q: "?" + q))


def targets(path: st.SearchStrategy[str], params: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[str]:
    """A request target: ``path`` (a route's shape, with hostile segments), a trailing slash or not,
    then a query string of the route's ``params``."""
    slash = st.sampled_from(["", "", "/", "//"])
    return st.builds(lambda p, s, q: p + s + q, path, slash, queries(params))


def join(*parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A path of segments drawn from ``parts``."""
    return st.tuples(*parts).map(lambda segs: "/" + "/".join(segs))


def fixed(text: str) -> st.SearchStrategy[str]:
    return st.just(text)


PULSAR_SEGMENTS = st.one_of(st.sampled_from(["persistent", "non-persistent", "public", "default"]),
                            segments(["persistent", "public", "default"]))


def header_sets(keys: dict[str, str], port: int) -> st.SearchStrategy[dict[str, str]]:
    """Handshake headers: credentials (of the fuzzed server's ``keys``, of another scheme, or garbage),
    an Origin (this host, another one, garbage), a subprotocol request, a session cookie; each maybe."""
    key = st.sampled_from(sorted(keys.values()))
    authorization = st.one_of(
        key.map(lambda k: f"Token {k}"), key.map(lambda k: f"Bearer {k}"), key.map(lambda k: f"token  {k} "),
        st.sampled_from(["Token garbage", "Token ", "Bearer", "Basic Zm9vOmJhcg==", "Token " + "x" * 5000,
                         "Token a\tb", "Digest username=x"]),
        RAW_TEXT.map(lambda t: t.strip()),
    )
    origin = st.one_of(st.sampled_from([f"http://127.0.0.1:{port}", "null", "http://evil.example", "file://",
                                        "http://[::1", ""]), RAW_TEXT.map(lambda t: t.strip()))
    # Mostly well-formed: a malformed one is refused by the websockets parser before any route is reached.
    protocol = st.one_of(st.sampled_from(["chat", "a, b", "x" * 300]), st.sampled_from(["chat", "v2.pulsar"]),
                         st.sampled_from(["", ",,,"]), RAW_TEXT.map(lambda t: t.strip()))
    cookie = st.one_of(st.sampled_from(["sessionid=garbage", "sessionid=", "sessionid=" + "a" * 40, "=;=;"]),
                       RAW_TEXT.map(lambda t: "sessionid=" + t.strip()))
    return st.fixed_dictionaries({}, optional={"Authorization": authorization, "Origin": origin,
                                               "Sec-WebSocket-Protocol": protocol, "Cookie": cookie})
