"""The task registry: tasks registered in code with a JSON schema; unknown tasks and invalid task
data refused with the reason; requirements validated for every task."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from django.test import override_settings

from app.work.tasks import (
    BEST_MATCH_ERRORS,
    InvalidTaskData,
    UnknownTask,
    _raise_first,
    register_task,
    registered_tasks,
    validate_task_data,
)
from tests.work import ECHO

pytestmark = pytest.mark.database_agnostic


def test_builtin_tasks_registered() -> None:
    """noop and sleep are registered when Django is ready."""
    assert {"noop", "sleep"} <= {task.name for task in registered_tasks()}


def test_valid_data_accepted() -> None:
    """Data the task's schema allows passes."""
    validate_task_data(ECHO, {"text": "hi", "items": [1, 2]})


def test_unknown_task_refused() -> None:
    """A task nobody registered is refused."""
    with pytest.raises(UnknownTask, match="unknown task 'nobody.registered'"):
        validate_task_data("nobody.registered", {})


@pytest.mark.parametrize(("data", "reason"), [
    ({}, r"task_data: 'text' is a required property"),
    ({"text": 5}, r"task_data\.text: 5 is not of type 'string'"),
    ({"text": "x", "items": [1, "two"]}, r"task_data\.items\[1\]: 'two' is not of type 'integer'"),
    ({"text": "x", "other": 1}, r"Additional properties are not allowed \('other' was unexpected\)"),
    ([1], r"task_data must be a JSON object"),
])
def test_invalid_data_refused_with_its_path(data: Any, reason: str) -> None:
    """Data the schema refuses is refused with the first error and where it is."""
    with pytest.raises(InvalidTaskData, match=reason):
        validate_task_data(ECHO, data)


def test_requirements_pass_a_strict_schema() -> None:
    """"requires" is not shown to the task's schema: a schema without additional properties takes it."""
    validate_task_data(ECHO, {"text": "x", "requires": {"arch": "amd64", "tools": ["docker"]}})


@pytest.mark.parametrize("requires", [
    "amd64", {"arch": {"nested": 1}}, {"arch": [["a"]]}, {"": "x"}, {"arch": None},
])
def test_malformed_requirements_refused(requires: Any) -> None:
    """Requirements are an object of scalars or lists of scalars, whatever the task."""
    with pytest.raises(InvalidTaskData, match=r"task_data\.requires"):
        validate_task_data("noop", {"requires": requires})


@override_settings(WORK_REQUEST_DATA_MAX_BYTES=64)
def test_oversized_data_refused() -> None:
    """Task data larger than WORK_REQUEST_DATA_MAX_BYTES encoded is refused."""
    with pytest.raises(InvalidTaskData, match="more than WORK_REQUEST_DATA_MAX_BYTES=64"):
        validate_task_data(ECHO, {"text": "x" * 20, "items": list(range(30))})


def test_invalid_schema_refused_at_registration() -> None:
    """A schema its draft's metaschema refuses is not registered."""
    with pytest.raises(ValueError, match="invalid JSON schema"):
        register_task("test.bad-schema", {"type": "no-such-type"})


def test_same_name_with_another_schema_refused() -> None:
    """A name is one task: registering it again with another schema fails; with the same, nothing changes."""
    first = register_task("test.twice", {"type": "object"})
    assert register_task("test.twice", {"type": "object"}) is first
    with pytest.raises(ValueError, match="registered already"):
        register_task("test.twice", {"type": "array"})


@pytest.mark.parametrize("name", ["", "Upper", "with space", "-leading", "x" * 101])
def test_bad_task_names_refused(name: str) -> None:
    """Task names are lower-case letters, digits, '_', '.', '-', 1-100 characters."""
    with pytest.raises(ValueError, match="task name"):
        register_task(name, {"type": "object"})


def test_draft_named_by_the_schema_is_used() -> None:
    """A schema naming draft-07 is checked as draft-07 (its "dependencies" keyword applies)."""
    register_task("test.draft7", {
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
        "dependencies": {"a": ["b"]},
    })
    validate_task_data("test.draft7", {"a": 1, "b": 2})
    with pytest.raises(InvalidTaskData, match="'b' is a dependency of 'a'"):
        validate_task_data("test.draft7", {"a": 1})


def test_unresolvable_ref_refused_at_registration() -> None:
    """A schema with a $ref that points nowhere is refused when registered, not at each validation."""
    schema = {"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}}
    with pytest.raises(ValueError, match="cannot be resolved"):
        register_task("test.bad-ref", schema)


def test_remote_ref_refused_at_registration() -> None:
    """A $ref to a document nobody registered is refused (nothing is fetched)."""
    schema = {"type": "object", "properties": {"x": {"$ref": "https://example.com/other.json"}}}
    with pytest.raises(ValueError, match="cannot be resolved"):
        register_task("test.remote-ref", schema)


def test_local_refs_accepted() -> None:
    """References to the schema's own $defs, also below a nested $id, are accepted and used."""
    register_task("test.local-ref", {
        "$defs": {"count": {"type": "integer"}},
        "type": "object",
        "properties": {
            "n": {"$ref": "#/$defs/count"},
            "m": {"$id": "https://example.com/m", "$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s"},
        },
    })
    with pytest.raises(InvalidTaskData, match=r"task_data\.n: 'x' is not of type 'integer'"):
        validate_task_data("test.local-ref", {"n": "x", "m": "fine"})


def test_many_errors_ranked_from_a_bounded_number() -> None:
    """Only the first BEST_MATCH_ERRORS errors are drawn from the validator, however many the data has."""
    drawn = 0

    class ManyErrors:
        def iter_errors(self, data: Any) -> Iterator[jsonschema.ValidationError]:
            nonlocal drawn
            for index in range(10 * BEST_MATCH_ERRORS):
                drawn += 1
                yield jsonschema.ValidationError(f"item {index} is wrong")

    with pytest.raises(InvalidTaskData, match="is wrong"):
        _raise_first(ManyErrors(), [], "task_data")
    assert drawn == BEST_MATCH_ERRORS
