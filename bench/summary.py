"""The top of docs/benchmarks.md: every headline figure against its target, and the plot.

Both are rebuilt after each run from the figures the benchmarks keep in their own sections, so a
benchmark run alone updates its rows and leaves the others' (each row says when it was measured).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, console, markdown_table, read_figures, utc_now, write_section

NAME = "summary"
PLOT = REPO_ROOT / "docs" / "bench_lag_throughput.png"


def _value(f: dict[str, Any]) -> str:
    v, unit = f["value"], f["unit"]
    if unit == "×":
        return f"{v:.2f}×"
    return f"{v:,.1f} {unit}" if v < 100 else f"{v:,.0f} {unit}"


def _target(f: dict[str, Any]) -> str:
    unit = "×" if f["unit"] == "×" else f" {f['unit']}"
    for key, sign in (("at_least", "≥"), ("at_most", "<")):
        if f.get(key) is not None:
            v = f[key]
            return f"{sign} {v:,.0f}{unit}" if v >= 100 else f"{sign} {v:g}{unit}"
    return ""


def write_summary(names: list[str]) -> None:
    """Rewrite the summary section and the plot from the figures found in docs/benchmarks.md."""
    found = read_figures()
    rows, machines = [], {}
    for name in names:
        if name not in found:
            continue
        section = found[name]
        machines.setdefault(section["machine"], []).append(name)
        for f in section["figures"]:
            met = "" if f["met"] is None else ("met" if f["met"] else "**missed**")
            rows.append([f"`{name}`", f["figure"], _value(f) + (" ⚠" if f.get("suspect") else ""), _target(f),
                         met, section["run"]])
    if not rows:
        return
    plotted = write_plot(found)
    missed = sum(1 for r in rows if r[4] == "**missed**")
    met = sum(1 for r in rows if r[4] == "met")
    machine_lines = [f"- {m} ({', '.join(n for n in ns)})" for m, ns in machines.items()]
    body = "\n".join([
        "## Summary",
        "",
        f"Every headline figure with its target ({met} met, {missed} missed); the sections below say how each was"
        " measured. ⚠: something outside the measurement used over 0.3 cores during it, even on the quieter of two"
        " runs, so the figure is likely pessimistic. Rebuilt " + utc_now() + ".",
        "",
        markdown_table(["benchmark", "figure", "value", "target", "", "measured"], rows, "llrrll"),
        "",
        "Measured on:",
        "",
        *machine_lines,
        *(["", "![Lag percentiles, read latency and throughput against their targets](bench_lag_throughput.png)"]
          if plotted else []),
    ])
    write_section(NAME, body, top=True)
    console.print(f"[dim]wrote the summary of docs/benchmarks.md{' and ' + PLOT.name if plotted else ''}[/dim]")


def write_plot(found: dict[str, dict[str, Any]], path: Path = PLOT) -> bool:
    lag = found.get("lag", {}).get("plot", {}).get("lag_ms")
    reads = found.get("rating", {}).get("plot", {}).get("reads_ms")
    throughput = {**found.get("relay", {}).get("plot", {}).get("throughput", {}),
                  **found.get("rating", {}).get("plot", {}).get("throughput", {})}
    if not (lag or reads or throughput):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (("lag", lag), ("reads", reads), ("throughput", throughput)) if p[1]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.4))
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (kind, data) in zip(axes, panels):
        if kind in ("lag", "reads"):
            _percentiles(ax, data)
            if kind == "lag":
                ax.set_title("End-to-end lag (append → projection)")
                ax.axhline(500, color="tab:red", ls="--", lw=1)
                ax.text(0.02, 500, " Kafka target p99 < 500 ms", color="tab:red", va="bottom", fontsize=8,
                        transform=ax.get_yaxis_transform())
                ax.axhline(2000, color="tab:purple", ls="--", lw=1)
                ax.text(0.02, 2000, " embedded target p99 < 2 s", color="tab:purple", va="bottom", fontsize=8,
                        transform=ax.get_yaxis_transform())
            else:
                ax.set_title("Rating reads, open loop (latency from due time)")
                ax.axhline(20, color="tab:red", ls="--", lw=1)
                ax.text(0.02, 20, " target p99 < 20 ms", color="tab:red", va="bottom", fontsize=8,
                        transform=ax.get_yaxis_transform())
        else:
            _throughput(ax, data)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _percentiles(ax, data: dict[str, dict[str, float]]) -> None:
    qs = ["50", "90", "99", "99.9", "100"]
    for label, values in data.items():
        ax.plot(range(len(qs)), [values[q] for q in qs], marker="o", label=label)
    ax.set_xticks(range(len(qs)), ["p50", "p90", "p99", "p99.9", "max"])
    ax.set_yscale("log")
    ax.set_ylabel("ms (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1, frameon=False)


TARGETS = {"relay": 5_000, "replay: rating": 50_000}


def _throughput(ax, data: dict[str, float]) -> None:
    labels = list(data)
    colours = ["tab:blue" if not label.startswith("replay") else "tab:green" for label in labels]
    ax.barh(range(len(labels)), [data[k] for k in labels], color=colours)
    ax.set_yticks(range(len(labels)), [_short(k) for k in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("events/s (log scale)")
    ax.set_title("Throughput (blue: to Kafka, green: replay)")
    for i, k in enumerate(labels):
        ax.text(data[k], i, f" {data[k]:,.0f}", va="center", fontsize=8)
        target = next((t for prefix, t in TARGETS.items() if k.startswith(prefix)), None)
        if target:
            ax.plot([target, target], [i - 0.4, i + 0.4], color="tab:red", lw=2)
    ax.plot([], [], color="tab:red", lw=2, label="target")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xlim(right=max([*data.values(), *TARGETS.values()]) * 4)
    ax.grid(True, axis="x", which="both", alpha=0.3)


def _short(label: str) -> str:
    return (label.replace("replay: ", "replay ").replace(" (store → Projector.rebuild)", "")
            .replace(" (store → Projector.rebuild_in_partitions)", "")
            .replace(" (carbon replay)", "").replace("through GET /v1/events", "via HTTP log"))
