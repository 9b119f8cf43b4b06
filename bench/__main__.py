"""python -m bench [--quick] [name ...]: run the named benchmarks (all when none is named).

A missed target is a result, not a failure: the exit status is non-zero only when a benchmark
could not run (no database, a request refused, a worker crashed). After a full (not --quick) run
the summary at the top of docs/benchmarks.md and its plot are rebuilt from every section's figures.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from bench.common import console

# name -> module; each module defines ``run(quick: bool) -> None``. Adding a benchmark is one line.
BENCHMARKS: dict[str, str] = {
    "append": "bench.append",
    "relay": "bench.relay",
    "lag": "bench.lag",
    "rating": "bench.rating",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the named benchmarks (all when none is named); each rewrites its section of docs/benchmarks.md.",
    )
    parser.add_argument("names", nargs="*", metavar="name", help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument(
        "--quick", action="store_true", help="short smoke run; figures are not written to docs/benchmarks.md"
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    failed: list[str] = []
    began = time.monotonic()
    for name in args.names or list(BENCHMARKS):
        console.rule(f"bench: {name}")
        started = time.monotonic()
        try:
            importlib.import_module(BENCHMARKS[name]).run(quick=args.quick)
        except KeyboardInterrupt:
            console.print("[red]interrupted[/red]")
            return 130
        except Exception:  # report and go on to the next benchmark; the exit status tells
            console.print(f"[red]bench {name} failed:[/red]")
            traceback.print_exc()
            failed.append(name)
        console.print(f"[dim]{name}: {time.monotonic() - started:.0f} s[/dim]")
    if not args.quick:
        from bench.summary import write_summary

        write_summary(list(BENCHMARKS))
    console.print(f"[dim]all: {time.monotonic() - began:.0f} s[/dim]")
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
