"""The names of the work endpoints (``/ws/workers/``, ``/ws/work-requests/``) can never be topics: every
way a topic comes into being refuses them, so no topic can shadow those sockets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from app.broker.creation import create_topic, ensure_event_topic
from app.broker.models import Topic
from app.broker.naming import topic_name_error
from app.broker.services import TopicError
from app.pulsar.autocreation import create_auto_topic
from app.pulsar.services import ensure_dead_letter_topic
from tests.api_client import call
from tests.protocol import make_user, superuser_key
from tests.servers import ServerProcess

NAMES = ["workers", "work-requests"]


def _model_validation(name: str) -> None:
    # What the admin's topic form and ``dasf_topic`` validate with.
    Topic(slug=name).full_clean(exclude=["last_sequence"])


PATHS: dict[str, tuple[Callable[[str], Any], type[Exception]]] = {
    "first message (DASF)": (lambda name: create_topic(name, make_user()), TopicError),
    "outbox event topic": (ensure_event_topic, TopicError),
    "Pulsar auto-creation": (lambda name: create_auto_topic(name, make_user(), "test"), TopicError),
    "Pulsar dead letter topic": (
        lambda name: ensure_dead_letter_topic(name, make_user(is_superuser=True), "test", explicit=True), TopicError
    ),
    "admin form": (_model_validation, ValidationError),
    "dasf_topic command": (lambda name: call_command("dasf_topic", name, "--new"), CommandError),
}


@pytest.mark.parametrize("name", NAMES)
def test_name_rule_says_reserved(name: str) -> None:
    """The topic name rule refuses the name as reserved."""
    assert "reserved" in (topic_name_error(name) or "")


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", NAMES)
def test_creation_path_refuses(name: str, path: str) -> None:
    """Each way a topic is created in the server refuses the name and creates nothing."""
    create, refusal = PATHS[path]
    with pytest.raises(refusal, match="reserved"):
        create(name)
    assert not Topic.objects.filter(slug=name).exists()


@pytest.mark.parametrize("name", NAMES)
def test_api_refuses(server: ServerProcess, name: str) -> None:
    """Creating the topic over the HTTP API is a 422."""
    assert call(server, "/topics", "POST", superuser_key(), {"name": name})[0] == 422
    assert not Topic.objects.filter(slug=name).exists()
