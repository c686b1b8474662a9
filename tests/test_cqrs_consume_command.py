"""``manage.py cqrs_consume``: django-cqrs's options, and the settings that keep one consumer per queue."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

ROOT = Path(__file__).resolve().parent.parent


@override_settings(AMQP_URL=None, CQRS_SOURCE=None, CQRS_QUEUE="replica")
def test_django_cqrs_options_parse_and_ignored_ones_warn() -> None:
    """``-w 1 -r --ignore-paths --sigint-timeout --sigkill-timeout`` parse; the reload ones are named as ignored."""
    err = io.StringIO()
    with pytest.raises(CommandError, match="AMQP_URL"):  # past the options: stops before consuming
        call_command("cqrs_consume", "-w", "1", "-r", "--ignore-paths", "env,node_modules", "--sigint-timeout", "3",
                     "--sigkill-timeout", "2", stderr=err)
    assert "--reload, --ignore-paths, --sigint-timeout, --sigkill-timeout not supported" in err.getvalue()


@override_settings(AMQP_URL="amqp://guest:guest@127.0.0.1:5672/", CQRS_SOURCE="rabbitmq", CQRS_QUEUE="replica")
def test_more_than_one_worker_is_refused() -> None:
    """``--workers 2`` is refused: two consumers of one queue would reorder an instance's changes."""
    with pytest.raises(CommandError, match="out of order"):
        call_command("cqrs_consume", "--workers", "2")


def test_prefetch_count_zero_is_refused_at_startup() -> None:
    """CQRS_PREFETCH_COUNT=0 (unlimited in AMQP) stops the process at startup."""
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "CQRS_PREFETCH_COUNT": "0"}, timeout=60)
    assert done.returncode != 0 and "CQRS_PREFETCH_COUNT must be at least 1" in done.stderr


def test_dead_letter_queue_named_as_the_queue_is_refused_at_startup() -> None:
    """CQRS_DEAD_LETTER_QUEUE = CQRS_QUEUE (dead letters consumed again, forever) stops the process at startup."""
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/", "CQRS_QUEUE": "replica",
                               "CQRS_DEAD_LETTER_QUEUE": "replica"}, timeout=60)
    assert done.returncode != 0 and "CQRS_DEAD_LETTER_QUEUE must not be CQRS_QUEUE" in done.stderr


@override_settings(CQRS_SOURCE="topic", CQRS_TOPIC="cqrs", CQRS_TOPIC_URL="ws://127.0.0.1:9", CQRS_QUEUE="replica")
def test_cqrs_id_is_refused_on_a_topic() -> None:
    """``-cid`` narrows RabbitMQ bindings: with CQRS_TOPIC (no bindings) it is refused with the reason."""
    with pytest.raises(CommandError, match="a topic subscription .* has none"):
        call_command("cqrs_consume", "-cid", "test_author")


@override_settings(CQRS_SOURCE="topic", CQRS_TOPIC="cqrs", CQRS_TOPIC_URL="ws://127.0.0.1:9", CQRS_QUEUE="replica")
@pytest.mark.parametrize(("queue", "reason"), [("a.b", r"--queue='a\.b': letters"),
                                               ("q" * 192, "would be 201 characters long")])
def test_queue_option_is_checked_as_a_subscription_on_a_topic(queue: str, reason: str) -> None:
    """``--queue`` on a topic is checked as CQRS_QUEUE is: ``<topic>-<queue>-DLQ`` must be a topic name."""
    with pytest.raises(CommandError, match=reason):
        call_command("cqrs_consume", "--queue", queue)


def test_half_configured_topic_source_is_refused_at_startup() -> None:
    """CQRS_TOPIC without CQRS_TOPIC_URL stops the process at startup, naming what is missing."""
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "CQRS_TOPIC": "cqrs", "CQRS_QUEUE": "replica"}, timeout=60)
    assert done.returncode != 0 and "CQRS_TOPIC is set but CQRS_TOPIC_URL is not" in done.stderr
