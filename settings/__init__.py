"""Django settings for Switchyard; everything is read from the environment in ``settings.base`` and,
for CQRS replication, ``settings.cqrs``."""

from settings.base import *  # noqa: F403
from settings.cqrs import *  # noqa: F403
