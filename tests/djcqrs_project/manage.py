"""manage.py of a Django project that runs the real django-cqrs (in .venv-djcqrs, `make djcqrs-env`)
for tests/test_cqrs_interop.py."""

import os
import sys

if __name__ == "__main__":
    # Forced, not defaulted: the tests' environment names Switchyard's settings.
    os.environ["DJANGO_SETTINGS_MODULE"] = "djcqrs_settings"
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
