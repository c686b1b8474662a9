"""Django settings for Switchyard; everything is read from the environment in ``settings.base``,
for CQRS replication in ``settings.cqrs``, for workers and work requests in ``settings.work``."""

from settings.base import *  # noqa: F403
from settings.cqrs import *  # noqa: F403
from settings.work import *  # noqa: F403
