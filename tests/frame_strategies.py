"""Hypothesis strategies for websocket frames (tests/test_fuzz_*.py): JSON values with hostile leaves,
frames of an endpoint's own shape with hostile field values, mutations of valid frames, garbage, and
frames over the server's frame limits. A strategy draws a batch of frames (text or binary) to send on
one connection, valid ones interleaved with the rest."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import strategies as st

Frame = str | bytes

# Numbers past what a 64-bit column, a float or a datetime holds, and the boundaries around them.
EDGE_INTEGERS = [0, -1, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30)]
INTEGERS = st.one_of(st.integers(), st.sampled_from(EDGE_INTEGERS))
FLOATS = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1e308, -1e308, 5e-324, -0.0]))
# NUL (which PostgreSQL refuses in text and jsonb), control and bidi characters, astral ones, escapes.
EDGE_TEXT = ["", "\x00", "a\x00b", "\u0000" * 3, "\u202e\u200b", "\U0001f600" * 8, "\\u0000", "'; --", "%s%n",
             "../../etc/passwd", "\ufeff", "\r\n", "x" * 300]
TEXT = st.one_of(st.text(max_size=40), st.sampled_from(EDGE_TEXT))
SCALARS = st.one_of(st.none(), st.booleans(), INTEGERS, FLOATS, TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)


def nested(depth: int, leaf: Any = 1, as_list: bool = True) -> Any:
    """``leaf`` wrapped ``depth`` times in a list (or an object)."""
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"d": value}
    return value


# Around codec.MAX_DEPTH (254); deeper values than 300 are written as text (DEEP_TEXT): the json module
# encodes nesting by recursion.
DEPTHS = st.one_of(st.integers(1, 300), st.sampled_from([253, 254, 255]))
DEEP = st.builds(nested, DEPTHS, SCALARS, st.booleans())
VALUES = st.one_of(JSON, DEEP)
# Around orjson's own limit (1024 levels), where a frame is not parsed at all.
DEEP_TEXT = st.builds(lambda depth, key: f'{{"{key}": {"[" * depth}1{"]" * depth}}}',
                      st.sampled_from([1023, 1024, 1025, 5000]),
                      st.sampled_from(["payload", "properties", "context", "messageId", "type", "metadata"]))


def b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def uuids() -> st.SearchStrategy[str]:
    return st.uuids().map(str)


PAYLOADS = st.one_of(JSON.map(b64), st.binary(max_size=32).map(lambda b: base64.b64encode(b).decode()), TEXT)
CONTEXTS = st.one_of(INTEGERS, TEXT)


def shaped(fields: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]] | None = None,
           ) -> st.SearchStrategy[dict[str, Any]]:
    """Frames of an endpoint's shape: each field of a valid value or, now and then, any value at all;
    optional fields present or not; and sometimes extra fields."""

    def either(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(good, good, VALUES)

    frames = st.fixed_dictionaries({k: either(v) for k, v in fields.items()},
                                   optional={k: either(v) for k, v in (optional or {}).items()})
    extras = st.dictionaries(TEXT, VALUES, max_size=2)
    return st.builds(lambda frame, extra: {**extra, **frame}, frames, st.one_of(st.just({}), extras))


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> Any:
    """A valid frame with one thing broken: a field dropped, replaced, added or nested deep, or the
    whole frame wrapped in a list."""
    frame = dict(draw(valid))
    keys = sorted(frame)
    how = draw(st.sampled_from(["drop", "replace", "add", "deepen", "wrap"]))
    if how == "drop" and keys:
        del frame[draw(st.sampled_from(keys))]
    elif how == "replace" and keys:
        frame[draw(st.sampled_from(keys))] = draw(VALUES)
    elif how == "deepen" and keys:
        key = draw(st.sampled_from(keys))
        frame[key] = nested(draw(st.integers(1, 260)), frame[key])
    elif how == "wrap":
        return [frame]
    else:
        frame[draw(TEXT)] = draw(VALUES)
    return frame


@st.composite
def encoded(draw: st.DrawFn, value: st.SearchStrategy[Any]) -> Frame:
    """``value`` as JSON text: ASCII-escaped or raw UTF-8, or now and then as a binary frame."""
    text = json.dumps(draw(value), ensure_ascii=draw(st.booleans()))
    return text.encode() if draw(st.integers(0, 9)) == 0 else text


@st.composite
def truncated(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> str:
    """A valid frame's JSON cut short (a frame split by a broken client)."""
    text = json.dumps(draw(valid))
    return text[: draw(st.integers(0, max(0, len(text) - 1)))]


GARBAGE: st.SearchStrategy[Frame] = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    st.sampled_from(["", "null", "[]", "42", '"x"', "NaN", "{", '{"a":}', "\x00", '{"a": 1}{"b": 2}', "[" * 2000]),
    DEEP_TEXT,
    encoded(st.one_of(SCALARS, st.lists(JSON, max_size=3))),
)


@st.composite
def oversized(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]], limit: int, hard_limit: int) -> Frame:
    """A valid frame padded past the frame limit (refused) or past the hard limit (the socket is closed
    with 1009)."""
    frame = dict(draw(valid))
    size = draw(st.one_of(st.integers(limit + 1, hard_limit), st.integers(hard_limit + 1, 2 * hard_limit),
                          st.sampled_from([limit + 1, hard_limit, hard_limit + 1])))
    # The padding is ASCII or three-byte characters: the limit counts bytes, not characters.
    char = draw(st.sampled_from(["x", "\u20ac"]))
    frame[draw(st.sampled_from(["padding", *sorted(frame)]))] = char * (size // len(char.encode()))
    return json.dumps(frame, ensure_ascii=False)


def batches(valid: st.SearchStrategy[dict[str, Any]], limit: int, hard_limit: int,
            max_frames: int = 6) -> st.SearchStrategy[list[Frame]]:
    """What one connection sends: valid frames interleaved with hostile, mutated, garbage and oversized
    ones (an oversized one at most now and then: each costs up to 2 * hard_limit bytes)."""
    one = st.one_of(
        encoded(valid),
        encoded(mutated(valid)),
        GARBAGE,
        truncated(valid),
        encoded(VALUES),
    )
    rare = st.one_of(one, oversized(valid, limit, hard_limit))
    return st.builds(lambda head, last: [*head, last], st.lists(one, max_size=max_frames - 1), rare)


def any_object() -> st.SearchStrategy[dict[str, Any]]:
    """Any JSON object (the endpoints that read nothing refuse them all)."""
    return st.dictionaries(TEXT, VALUES, max_size=4)


def message_ids() -> st.SearchStrategy[Any]:
    return st.one_of(uuids(), TEXT, st.just("x" * 10_000), VALUES)
