"""Benchmark suite: ``python -m bench [--smoke] [--json FILE] [--only PHASES] [--skip PHASES]``.

Needs a PostgreSQL where it may create a throwaway database: ``OTEL_PG_BENCH_DSN``, else
``OTEL_EXPORTER_POSTGRES_DSN``, else ``OTEL_PG_TEST_DSN``. Runs the phases of ``phases.PHASES``
in order, prints a table (each figure with its target's verdict) and writes JSON after every phase.
``--smoke`` runs tiny sizes that only prove the script works (CI uses it; nothing is timed there).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .phases import PHASES
from .registry import SIZES, Run
from .support import machine, server_dsn, throwaway_database


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    names = ",".join(p.name for p in PHASES)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: proves the script runs, times nothing"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/latest.json"))
    parser.add_argument("--payload", type=int, default=500, help="bytes of input and of output per LLM span")
    parser.add_argument("--conventions", default="otel", help="comma list of otel,oi,tl (cycled per trace)")
    parser.add_argument("--skip", default="", help=f"comma list of phases to skip: {names}")
    parser.add_argument("--only", default="", help="comma list of the phases to run (the others are skipped)")
    parser.add_argument("--retention", action="store_true", help="shorthand for --only retention")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(","))) | ({"retention"} if args.retention else set())
    chosen = [p for p in PHASES if p.name not in skip and (not only or p.name in only)]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": machine(),
        "mode": "smoke" if args.smoke else "full",
        "payload": args.payload,
        "conventions": tuple(args.conventions.split(",")),
    }

    def save() -> None:  # after every phase, so a long run that dies keeps what it measured
        args.json.write_text(json.dumps(results, indent=2, default=str))

    with throwaway_database(server_dsn()) as dsn:
        run = Run(dsn, SIZES[results["mode"]], args.payload, results["conventions"])
        for phase in chosen:
            results.update(phase.run(run))
            save()
    report(results)
    save()
    print(f"\nJSON written to {args.json}")
    return 0


def report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"machine: {m['cores']} cores, {m['memory_gib']} GiB, PostgreSQL {m['postgresql']}, "
        f"Python {m['python']}; mode {r['mode']}; payload {r['payload']} B; conventions {','.join(r['conventions'])}"
    )
    rows = [row for phase in PHASES for row in phase.render(r)]
    width = max((len(a) for a, _, _ in rows), default=0)
    print()
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:<32} {c}")
    if "profile" in r:
        print("\nwriter-only profile, top functions by self time:")
        for p in r["profile"]:
            print(f"  {p.get('share', 0) * 100:5.1f}%  {p['function']}")
