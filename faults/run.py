"""``make faults``: every scenario of the matrix against real processes, one table row each; the exit
status is 1 when a row lost anything, logged an ERROR it did not expect, or failed.

    python -m faults.run [--quick] [--only NAME,NAME[backend],...] [--list]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback

import django
import pytest

from faults.row import Row, cells, table
from faults.scenario import Scenario, play
from faults.services import services_up


def chosen(scenarios: tuple[Scenario, ...], only: str | None) -> list[Scenario]:
    if not only:
        return list(scenarios)
    names = {name.strip() for name in only.split(",") if name.strip()}
    picked = [s for s in scenarios if s.name in names or s.key in names]
    unknown = names - {s.name for s in picked} - {s.key for s in picked}
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}; --list shows them")
    return picked


async def main(scenarios: list[Scenario], quick: bool) -> list[Row]:
    rows = []
    for scenario in scenarios:
        print(f"-- {scenario.key} ...", flush=True)
        try:
            row = await play(scenario, quick)
        # A scenario that breaks is a failed row, and the others still run (pytest.fail: a service
        # required under CI=true is absent).
        except (Exception, pytest.fail.Exception):
            row = Row(scenario.name, scenario.backend, notes=["crashed:\n" + traceback.format_exc()])
        finally:
            services_up()
        print("   " + " | ".join(cells(row)), flush=True)
        rows.append(row)
    return rows


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI's smaller profile")
    parser.add_argument("--only", help="comma-separated scenario names or name[backend] keys")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    django.setup()
    from faults.matrix import SCENARIOS
    from tests.databases import drop_created

    if args.list:
        for scenario in SCENARIOS:
            print(scenario.key)
        return 0
    try:
        rows = asyncio.run(main(chosen(SCENARIOS, args.only), args.quick))
    finally:
        drop_created()  # the PostgreSQL databases the scenarios made
    print()
    print(table(rows))
    failed = [row for row in rows if not row.passed]
    verdict = f"\n{len(rows) - len(failed)} of {len(rows)} rows passed"
    print(verdict + (f"; FAILED: {', '.join(f'{r.scenario}[{r.backend}]' for r in failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(cli())
