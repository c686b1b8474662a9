"""Django settings for Switchyard; everything is read from the environment in ``settings.base``."""

from settings.base import *  # noqa: F403
