"""``constcl data check PATH [--json] [--workers N]``: report which videos of a source are usable.

The scan is :func:`constcl.data.check.check_source`. The exit code is 0 whenever the scan ran,
bad files included (it is a report); 2 when PATH itself is unusable (missing, or a folder
without videos), reported by ``constcl.cli.main`` as one ``constcl: error: ...`` line.
``--json`` prints the report as one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os

from constcl.data.check import check_source

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="folder of videos (class sub-folders allowed), .csv or .txt")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="parallel processes (1: scan in this process)",
    )
    parser.add_argument(
        "--root",
        default=None,
        help="folder that CSV / list entries are relative to (default: the list's folder)",
    )


def _print_table(report: dict) -> None:
    for f in report["files"]:
        if f["ok"]:
            print(
                f"ok   {f['path']}  {f['duration']:.2f}s  {f['fps']:.2f} fps  "
                f"{f['width']}x{f['height']}  {f['num_frames']} frames"
            )
        else:
            print(f"BAD  {f['path']}  {f['reason']}")
    print(f"{report['ok']} ok, {len(report['bad'])} bad")


def run(args: argparse.Namespace) -> int:
    report = check_source(args.path, workers=args.workers, root=args.root)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_table(report)
    return 0
