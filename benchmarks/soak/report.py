"""The soak's output: the table of intervals (printed, and as Markdown), the whole result as JSON, and a
plot of throughput, p99 latency and server memory over time as a PNG beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (heading, key of an interval row, decimals)
COLUMNS: list[tuple[str, str, int]] = [
    ("t min", "t_min", 1),
    ("deliveries/s", "delivered_per_s", 1),
    ("e2e p99 ms", "delivery_p99_ms", 1),
    ("rr/s", "round_trips_per_s", 1),
    ("rr p99 ms", "rr_p99_ms", 1),
    ("outbox/s", "outbox_per_s", 1),
    ("work/s", "work_completed_per_s", 1),
    ("churn/s", "churn_per_s", 1),
    ("work backlog", "work_backlog", 0),
    ("outbox backlog", "outbox_backlog", 0),
    ("RSS MiB", "rss_mib", 1),
    ("fds", "open_fds", 0),
    ("errors", "errors", 0),
]


def cell(value: Any, decimals: int) -> str:
    if value is None:
        return "-"
    return f"{value:.{decimals}f}" if isinstance(value, float) else str(value)


def table(rows: list[dict[str, Any]]) -> str:
    widths = [max(len(title), 8) for title, _, _ in COLUMNS]
    lines = ["  ".join(title.rjust(w) for (title, _, _), w in zip(COLUMNS, widths, strict=True))]
    for row in rows:
        lines.append("  ".join(cell(row.get(key), d).rjust(w) for (_, key, d), w in zip(COLUMNS, widths, strict=True)))
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    heads = [title for title, _, _ in COLUMNS]
    lines = [f"# Soak {result['started']}", "", f"- configuration: {result['configuration']}",
             f"- offered: {result['offered']}", f"- {result['minutes']} min, intervals of {result['interval_s']} s",
             "", "| " + " | ".join(heads) + " |", "|" + "---:|" * len(heads)]
    for row in result["intervals"]:
        lines.append("| " + " | ".join(cell(row.get(key), d) for _, key, d in COLUMNS) + " |")
    lines += ["", "Totals (after the drain):", ""]
    lines += [f"- {name}: {json.dumps(figures)}" for name, figures in result["totals"].items()]
    if result["errors"]:
        lines += ["", "Errors (first of each kind):", ""]
        lines += [f"- {kind} x{count}: {result['first_errors'][kind]}" for kind, count in result["errors"].items()]
    lines += ["", f"**{result['verdict']}**", "", f"![soak]({result['plot']})", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on the machines that run it
    import matplotlib.pyplot as plt

    rows = result["intervals"]
    t = [row["t_min"] for row in rows]
    fig, (rates, latency, memory) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    # Deliveries are tens of times the other rates: their own axis, both linear, so a dip to 0 shows.
    deliveries = rates.twinx()
    deliveries.plot(t, [row["delivered_per_s"] for row in rows], marker="s", color="black", label="deliveries/s")
    deliveries.set_ylabel("deliveries/s")
    deliveries.set_ylim(bottom=0)
    deliveries.legend(loc="lower right", fontsize="small")
    for key, label in (("outbox_per_s", "outbox events/s"), ("work_completed_per_s", "work requests completed/s"),
                       ("churn_per_s", "churn connections/s"), ("round_trips_per_s", "request/reply round trips/s")):
        rates.plot(t, [row[key] for row in rows], marker="o", label=label)
    rates.set_ylabel("per second")
    rates.set_ylim(bottom=0)
    rates.legend(loc="lower left", fontsize="small")
    rates.set_title(f"Soak {result['started']}: {result['configuration']}")
    for key, label in (("rr_p99_ms", "request/reply p99"), ("delivery_p99_ms", "producer -> consumer p99")):
        latency.plot(t, [row[key] for row in rows], marker="o", label=label)
    latency.set_ylabel("ms")
    latency.legend(fontsize="small")
    samples = result["rss_samples"]
    memory.plot([s / 60 for s, _ in samples], [v for _, v in samples], label="server RSS (samples)")
    memory.plot(t, [row["rss_mib"] for row in rows], "o", label="at interval end")
    memory.axvspan(0, result["minutes"] * result["warmup_fraction"], color="grey", alpha=0.15, label="warm-up")
    memory.set_ylabel("RSS MiB")
    memory.set_xlabel("minutes")
    memory.legend(fontsize="small")
    fig.text(0.01, 0.005, result["verdict"], fontsize=8)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(result: dict[str, Any], directory: Path, stem: str) -> dict[str, Path]:
    """JSON, Markdown and PNG as ``directory/stem.*``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {kind: directory / f"{stem}.{kind}" for kind in ("json", "md", "png")}
    result["plot"] = paths["png"].name
    plot(result, paths["png"])
    paths["json"].write_text(json.dumps(result, indent=2))
    paths["md"].write_text(markdown(result))
    return paths
