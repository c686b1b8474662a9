"""Make a fresh database ready for a benchmark server: migrate, then create the topics.

    DATABASE_URL=... python -m benchmarks.provision <slug>:<policy> [<slug>:<policy> ...]

The topics are made by the ``dasf_topic`` management command, as an admin would; all in one process
because a Django start per topic would cost about a second each.
"""

from __future__ import annotations

import os
import sys


def main(specs: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    for spec in specs:
        slug, policy = spec.rsplit(":", 1)
        # --no-dasf: a consumer of a DASF topic first gets an api_info probe, which is not a message.
        call_command("dasf_topic", slug, "--new", "--anonymous", "--no-dasf", "--store-messages", policy)


if __name__ == "__main__":
    main(sys.argv[1:])
