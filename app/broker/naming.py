"""Which names a topic may have, and which names a request may give its response topic.

A request creates its response topic, so a response topic's name must not reach beyond its source:
the response topics of ``S`` are named ``S_<suffix>`` (the DASF client names them ``S_`` plus 8
random letters). A request can then never create, and so never squat, a name outside the
namespace of the topic it was published on.
"""

from __future__ import annotations

import re

from django.conf import settings

from app.broker.models import RESERVED_TOPICS, TOPIC_PATTERN

_TOPIC_NAME = re.compile(TOPIC_PATTERN)
# Names echoed in refusals are cut here: the refusal must stay short whatever was sent.
SHOWN_CHARS = 64


def shown(slug: str) -> str:
    return slug if len(slug) <= SHOWN_CHARS else f"{slug[:SHOWN_CHARS]}…"


def topic_name_error(slug: str) -> str | None:
    """Why ``slug`` cannot name a topic, or None when it can."""
    problem = _problem(slug)
    return None if problem is None else f"invalid topic name {shown(slug)!r}: {problem}"


def response_topic_name_error(source: str, slug: str) -> str | None:
    """Why a request published on ``source`` may not name ``slug`` as its response topic."""
    prefix = f"{source}_"
    if not slug.startswith(prefix) or len(slug) == len(prefix):
        problem: str | None = f"a response topic of {shown(source)} is named {shown(prefix)}<suffix>"
    else:
        problem = _problem(slug)
    return None if problem is None else f"invalid response topic {shown(slug)!r}: {problem}"


def _problem(slug: str) -> str | None:
    limit = settings.TOPIC_NAME_MAX_CHARS
    if len(slug) > limit:
        return f"longer than {limit} characters ({len(slug)})"
    if not _TOPIC_NAME.fullmatch(slug):
        return "letters, digits, '-' and '_' only"
    if slug in RESERVED_TOPICS:
        return "reserved"
    return None


# A response topic is named <source>_<suffix>; sources tried per missing name at most (the
# longest first: the DASF client's suffix has no '_').
MAX_SOURCES_TRIED = 4


def response_topic_sources(slug: str) -> list[str]:
    """The names whose response topic ``slug`` could be, longest first."""
    cuts = [index for index, char in enumerate(slug) if char == "_" and 0 < index < len(slug) - 1]
    return [slug[:index] for index in reversed(cuts)][:MAX_SOURCES_TRIED]
