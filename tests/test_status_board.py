"""What status viewers are told (app/availability/board.py) and the api_info names they are shown
(app/availability/api_info.py, also the HTTP API's names): plain functions, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from app.availability.api_info import MAX_NAME_CHARS, MAX_NAMES, ApiSummary, ClassSummary, names, summarize
from app.availability.board import SentApis, StatusBoard
from app.availability.rules import Availability
from app.availability.services import TopicStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Viewer:
    def __init__(self) -> None:
        self.shown: list[TopicStatus] = []

    def show(self, status: TopicStatus) -> None:
        self.shown.append(status)


def status(pong: datetime | None = T0, api_info: Any = None, state: Availability = Availability.ONLINE) -> TopicStatus:
    return TopicStatus("t", state, T0, pong, api_info, summarize(api_info))


def watched() -> tuple[StatusBoard, Viewer]:
    board, viewer = StatusBoard(), Viewer()
    board.watch(viewer, ["t"])
    board.update(status(), 0.0)
    viewer.shown.clear()
    return board, viewer


def test_same_status_again_is_not_shown() -> None:
    """A re-read that changed nothing tells no viewer."""
    board, viewer = watched()
    assert not board.update(status(), 1.0)
    assert viewer.shown == []


def test_new_pong_time_is_shown_though_still_online() -> None:
    """A new pong with the availability unchanged is shown: the page must not keep an old time."""
    board, viewer = watched()
    newer = status(pong=T0 + timedelta(seconds=60))
    assert board.update(newer, 1.0)
    assert viewer.shown == [newer]


def test_new_api_info_is_shown() -> None:
    """A module announcing a different API is shown; the same API with other schemas is not news."""
    board, viewer = watched()
    board.update(status(api_info={"functions": [{"name": "add", "rpc_schema": {}}]}), 1.0)
    board.update(status(api_info={"functions": [{"name": "add", "rpc_schema": {"x": 1}}]}), 2.0)
    assert [s.api for s in viewer.shown] == [ApiSummary(("add",), (), 0)]


def test_summary_of_demessaging_api_info() -> None:
    """Function names, then class names with their method names."""
    info = {"functions": [{"name": "hello_world"}, {"name": "add"}],
            "classes": [{"name": "Greeter", "methods": [{"name": "greet"}]}], "rpc_schema": {}}
    assert summarize(info) == ApiSummary(("hello_world", "add"), (ClassSummary("Greeter", ("greet",)),), 0)


def test_nothing_announced_is_none() -> None:
    """No api_info yet, an empty one, or something that is not an object: nothing to show."""
    for info in ({}, None, [], "x", {"functions": [], "classes": []}, {"functions": "add"}):
        assert summarize(info) is None, info


def test_names_are_bounded() -> None:
    """At most MAX_NAMES names of at most MAX_NAME_CHARS each; the rest is counted, odd entries are "?"."""
    info = {"functions": [{"name": "f" * 1000}, {"name": 7}, "plain", *({"name": f"g{i}"} for i in range(200))],
            "classes": [{"name": "C", "methods": [{"name": "m"}] * 5}]}
    summary = summarize(info)
    assert summary is not None
    assert len(summary.functions) == MAX_NAMES and summary.classes == ()
    assert summary.functions[:3] == ("f" * (MAX_NAME_CHARS - 1) + "…", "?", "plain")
    assert summary.omitted == 203 + 1 + 5 - MAX_NAMES


def test_methods_share_the_bound() -> None:
    """Methods count against MAX_NAMES too: a class with thousands of methods shows some and counts the rest."""
    summary = summarize({"classes": [{"name": "C", "methods": [{"name": f"m{i}"} for i in range(5000)]}]})
    assert summary is not None
    (cls,) = summary.classes
    assert len(cls.methods) == MAX_NAMES - 1 and summary.omitted == 5000 - (MAX_NAMES - 1)


def listed(summary: ApiSummary) -> int:
    return len(summary.functions) + sum(1 + len(c.methods) for c in summary.classes)


def test_many_classes_with_methods_stay_within_the_bound() -> None:
    """60 classes of 100 methods each list MAX_NAMES names in all (class names count); the rest is counted."""
    classes = [{"name": f"C{c}", "methods": [{"name": f"m{i}"} for i in range(100)]} for c in range(60)]
    summary = summarize({"classes": classes})
    assert summary is not None
    assert listed(summary) == MAX_NAMES and summary.omitted == 60 * 101 - MAX_NAMES
    assert [c.name for c in summary.classes] == ["C0"] and len(summary.classes[0].methods) == MAX_NAMES - 1


def test_classes_after_functions_fill_only_the_room_left() -> None:
    """58 functions and 3 classes of a method each list 60 names: the first class and its method."""
    classes = [{"name": f"C{c}", "methods": [{"name": "m"}]} for c in range(3)]
    summary = summarize({"functions": [f"f{i}" for i in range(58)], "classes": classes})
    assert summary is not None
    assert listed(summary) == MAX_NAMES and summary.omitted == 58 + 6 - MAX_NAMES
    assert summary.classes == (ClassSummary("C0", ("m",)),)


def test_many_small_classes_stay_within_the_bound() -> None:
    """Hundreds of classes with a method each list MAX_NAMES names in all."""
    summary = summarize({"classes": [{"name": f"C{c}", "methods": ["a", "b"]} for c in range(500)]})
    assert summary is not None
    assert listed(summary) == MAX_NAMES and summary.omitted == 1500 - MAX_NAMES


def test_api_names_list_every_name_unshortened() -> None:
    """The HTTP API's names: all functions and classes, full length, past MAX_NAMES; odd entries are "?"."""
    info = {"functions": [{"name": "f" * 1000}, {"name": 7}, "plain", *({"name": f"g{i}"} for i in range(200))],
            "classes": [{"name": "Greeter", "methods": [{"name": "greet"}]}]}
    found = names(info)
    assert found is not None
    assert found.functions[:3] == ("f" * 1000, "?", "plain") and len(found.functions) == 203
    assert found.classes == ("Greeter",)


def test_api_names_of_nothing_announced_is_none() -> None:
    """No api_info, an empty one, or lists that are not lists: no names (not the letters of a string)."""
    for info in ({}, None, [], "x", {"functions": [], "classes": []}, {"functions": "add"}):
        assert names(info) is None, info


def test_api_sent_to_a_viewer_once_until_it_changes() -> None:
    """A viewer is sent a topic's API with its first status, not with later ones alike, again when it changes."""
    sent = SentApis()
    add, mul = {"functions": [{"name": "add"}]}, {"functions": [{"name": "mul"}]}
    assert sent.news(status(api_info=add))
    assert not sent.news(status(pong=T0 + timedelta(seconds=60), api_info=add))
    assert sent.news(status(api_info=mul))
    assert sent.news(status(api_info=None)) and not sent.news(status(api_info={}))


def test_api_sent_again_after_the_topic_was_gone() -> None:
    """A topic gone from a viewer and back gets its API with its first status again."""
    sent = SentApis()
    sent.news(status(api_info={"functions": ["add"]}))
    sent.forget("t")
    assert sent.news(status(api_info={"functions": ["add"]}))
