"""Make a fresh database ready for the soak: migrate, create the topics (benchmarks/provision.py), register
the workers and make a superuser's key (it emits outbox events to any topic and submits work).

    DATABASE_URL=... python -m benchmarks.soak.provision WORKERS <slug>:<policy> [...]

Prints one JSON line ``{"workers": [key, ...], "admin": key}``.
"""

from __future__ import annotations

import json
import sys

from benchmarks import provision


def main(workers: int, topics: list[str]) -> None:
    provision.main(topics)  # sets Django up, migrates, creates the topics
    from django.contrib.auth import get_user_model

    from app.auth.services import create_token
    from app.work.workers import register_worker

    admin = get_user_model().objects.create_superuser("soak-admin")
    _, admin_key = create_token(admin, comment="soak")
    keys = [register_worker(f"soak-{n}")[1] for n in range(workers)]
    print(json.dumps({"workers": keys, "admin": admin_key}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
