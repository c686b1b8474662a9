"""``CQRS_TRACKED_FIELDS``: the values a master's tracked fields had when loaded or last saved, so a
SAVE can carry what changed as ``previous_data`` (django-cqrs's ``CQRSTracker``, without
django-model-utils).

Values are kept as django-cqrs keeps them: JSON-ready (dates, times and UUIDs as text), a foreign
key by its column (``author_id``) but reported under the field's name (``author``) by an update, and
under its column by a creation and ``Model.cqrs.bulk_update`` (django-cqrs's quirks, kept so its
replicas see what django-cqrs masters send).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import models

ALL_FIELDS = "__all__"
# Instance attributes (not fields): the loaded values and the previous_data of the pending SAVE.
SAVED_ATTR = "_cqrs_tracked_saved"
PREVIOUS_ATTR = "_cqrs_previous_data"


def json_value(value: Any) -> Any:
    """A field value as instance_data and previous_data hold it, as django-cqrs's ujson writes it:
    dates, times and UUIDs as text, a Decimal as a JSON number (a float: ``Decimal("1.50")`` is
    ``1.5``, so digits beyond a float's precision are lost, as with django-cqrs)."""
    if isinstance(value, Decimal):
        return float(value)
    return str(value) if isinstance(value, date | datetime | UUID) else value


def tracked_attnames(model: type[models.Model]) -> dict[str, str]:
    """Tracked column name -> field name, for a model with CQRS_TRACKED_FIELDS."""
    declared = getattr(model, "CQRS_TRACKED_FIELDS", None)
    return {
        field.attname: field.name
        for field in model._meta.concrete_fields
        if declared == ALL_FIELDS or field.name in (declared or ())
    }


def current(instance: models.Model) -> dict[str, Any]:
    """Tracked values now, by column name; deferred (never loaded) fields are left out, not fetched."""
    loaded = instance.__dict__
    return {attname: json_value(loaded[attname]) for attname in tracked_attnames(type(instance)) if attname in loaded}


def remember(instance: models.Model) -> None:
    """Take the tracked values as the saved ones (after loading or saving)."""
    instance.__dict__[SAVED_ATTR] = current(instance)


def changed(instance: models.Model, adding: bool) -> dict[str, Any]:
    """Previous values of the tracked fields this save changes, by field name. A new instance
    reports each tracked field with a value as previously null, by column name (``author_id``), as
    django-cqrs 3.1's ``changed_initial`` does (its update reports ``author``)."""
    names = tracked_attnames(type(instance))
    now = current(instance)
    if adding:
        return {attname: None for attname in names if now.get(attname) is not None}
    saved: dict[str, Any] = instance.__dict__.get(SAVED_ATTR, {})
    return {names[attname]: old for attname, old in saved.items() if attname in now and now[attname] != old}


def on_post_init(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    remember(instance)
