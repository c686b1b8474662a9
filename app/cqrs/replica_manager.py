"""``Model.cqrs`` of a replica model: django-cqrs's ``ReplicaManager``, the default database work
behind ``cqrs_save`` / ``cqrs_delete``, with its method names and meanings, so code written for
django-cqrs (a ``cqrs_save`` override that calls ``cls.cqrs.save_instance(...)``) runs unchanged:

- ``save_instance(master_data, previous_data=None, sync=False, meta=None)``: map the master's data
  (``CQRS_MAPPING``), then create or update by primary key; the instance, or None when the data
  cannot be applied (sync fields, the primary key or a required field missing, a bad mapping);
- ``create_instance(mapped_data, ...)``: the model's ``cqrs_create``;
- ``update_instance(instance, mapped_data, ...)``: the revision checks (a SAVE older than, or equal
  to, the stored revision leaves the instance as it is and returns it; a SYNC applies any revision),
  then the instance's ``cqrs_update``;
- ``delete_instance(master_data)``: delete by the master's ``id``; True even when nothing was there.

One difference: django-cqrs logs a database or validation error raised by ``cqrs_create`` /
``cqrs_update`` / the delete and returns None (False); here it propagates. The consumer retries
the payload all the same, but ``should_retry_cqrs`` sees the exception, and a database outage is
told from a bad payload (app/cqrs/apply.py), which a swallowed error would hide.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    from app.cqrs.replica import ReplicaMixin

logger = logging.getLogger(__name__)


class ReplicaManager(models.Manager[Any]):
    model: type[ReplicaMixin]

    def save_instance(
        self,
        master_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Create or update the instance from the master's data (see the module)."""
        mapped = self._map_save_data(master_data)
        if mapped is None:
            return None
        mapped_previous = self._map_previous_data(previous_data) if previous_data else None
        pk_name = self.model._meta.pk.name
        qs = self.model._default_manager.filter(**{pk_name: mapped[pk_name]}).order_by()
        if self.model.CQRS_SELECT_FOR_UPDATE:
            qs = qs.select_for_update()
        instance = qs.first()
        if instance is None:
            return self.create_instance(mapped, previous_data=mapped_previous, sync=sync, meta=meta)
        return self.update_instance(instance, mapped, previous_data=mapped_previous, sync=sync, meta=meta)

    def create_instance(
        self,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """A new instance from mapped data, through the model's ``cqrs_create``."""
        return self.model.cqrs_create(sync, mapped_data, **self._hook_kwargs(previous_data, meta))

    def update_instance(
        self,
        instance: ReplicaMixin,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """``instance`` updated from mapped data through its ``cqrs_update``, if the revision allows;
        else ``instance`` unchanged."""
        if not self._newer(instance, mapped_data, sync):
            return instance
        return instance.cqrs_update(sync, mapped_data, **self._hook_kwargs(previous_data, meta))

    def delete_instance(self, master_data: dict[str, Any]) -> bool:
        """Delete by the master's ``id``; False when the data lacks it or the sync fields."""
        if "id" not in master_data:
            logger.warning("CQRS PK is not provided in data (%s).", self.model.CQRS_ID)
            return False
        if not self._cqrs_fields_are_filled(master_data):
            return False
        pk_name = self.model._meta.pk.name
        self.model._default_manager.filter(**{pk_name: master_data["id"]}).delete()
        return True

    # --- django-cqrs's checks and mapping ------------------------------------------------------

    def _hook_kwargs(self, previous_data: dict[str, Any] | None, meta: dict[str, Any] | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"previous_data": previous_data}
        if self.model.CQRS_META:
            kwargs["meta"] = meta
        return kwargs

    def _newer(self, instance: ReplicaMixin, mapped: dict[str, Any], sync: bool) -> bool:
        """Whether the payload's revision may replace the stored one (django-cqrs's checks; it logs
        stale and duplicate payloads as ERROR, here they are ordinary at-least-once traffic)."""
        model = self.model
        pk = mapped[model._meta.pk.name]
        new, existing = mapped["cqrs_revision"], instance.cqrs_revision
        if sync:
            if existing > new:
                logger.warning("CQRS revision downgrade on sync: pk = %s, cqrs_revision = new %s / existing %s (%s).",
                               pk, new, existing, model.CQRS_ID)
            return True
        if existing > new:
            logger.warning("Wrong CQRS sync order (skipped): pk = %s, cqrs_revision = new %s / existing %s (%s).",
                           pk, new, existing, model.CQRS_ID)
            return False
        if existing == new:
            logger.info("Received duplicate CQRS data (skipped): pk = %s, cqrs_revision = %s (%s).",
                        pk, new, model.CQRS_ID)
            return False
        if new != existing + 1:
            logger.warning("Lost or filtered out %s CQRS packages: pk = %s, cqrs_revision = %s (%s)",
                           new - existing - 1, pk, new, model.CQRS_ID)
        return True

    def _map_save_data(self, master_data: dict[str, Any]) -> dict[str, Any] | None:
        model = self.model
        if not self._cqrs_fields_are_filled(master_data):
            return None
        mapped = self._initial_mapping(master_data)
        if mapped is None:
            return None
        if model._meta.pk.name not in mapped:
            logger.warning("CQRS PK is not provided in data (%s).", model.CQRS_ID)
            return None
        if model.CQRS_CUSTOM_SERIALIZATION:
            return mapped
        mapped = self._known_fields(mapped)
        required = {f.name for f in model._meta.fields if not f.null}
        if required - mapped.keys():
            logger.warning("Not all required CQRS fields are provided in data (%s): %s missing.",
                           model.CQRS_ID, sorted(required - mapped.keys()))
            return None
        return mapped

    def _initial_mapping(self, master_data: dict[str, Any]) -> dict[str, Any] | None:
        model = self.model
        if model.CQRS_MAPPING is None:
            return dict(master_data)
        mapped = {"cqrs_revision": master_data["cqrs_revision"], "cqrs_updated": master_data["cqrs_updated"]}
        for master_name, replica_name in model.CQRS_MAPPING.items():
            if master_name not in master_data:
                logger.warning("Bad master-replica mapping for %s (%s).", master_name, model.CQRS_ID)
                return None
            mapped[replica_name] = master_data[master_name]
        return mapped

    def _map_previous_data(self, previous_data: dict[str, Any]) -> dict[str, Any]:
        mapping = self.model.CQRS_MAPPING
        if mapping is None:
            return previous_data
        return self._known_fields(
            {replica: previous_data[master] for master, replica in mapping.items() if master in previous_data})

    def _known_fields(self, data: dict[str, Any]) -> dict[str, Any]:
        names = {f.name for f in self.model._meta.fields}
        return {key: value for key, value in data.items() if key in names}

    def _cqrs_fields_are_filled(self, data: dict[str, Any]) -> bool:
        if "cqrs_revision" in data and "cqrs_updated" in data:
            return True
        logger.warning("CQRS sync fields are not provided in data (%s).", self.model.CQRS_ID)
        return False
