"""Make a fresh database ready for the work benchmark: migrate, register the workers, make a submitter.

    DATABASE_URL=... python -m benchmarks.work_provision 50

Prints one JSON line ``{"workers": [key, ...], "submitter": key}``: the workers' keys (``bench-0`` ..,
concurrency 1, no metadata) and the key of a user who holds ``work.add_workrequest`` and nothing
more, as an HTTP client submitting work would. All in one process: a Django start per worker would
cost about a second each.
"""

from __future__ import annotations

import json
import os
import sys


def main(count: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.core.management import call_command

    from app.auth.services import create_token
    from app.work.workers import register_worker

    call_command("migrate", interactive=False, verbosity=0)
    submitter = get_user_model().objects.create_user("bench-submitter")
    submitter.user_permissions.add(Permission.objects.get(content_type__app_label="work", codename="add_workrequest"))
    _, submitter_key = create_token(submitter, comment="work benchmark")
    workers = [register_worker(f"bench-{n}")[1] for n in range(count)]
    print(json.dumps({"workers": workers, "submitter": submitter_key}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
