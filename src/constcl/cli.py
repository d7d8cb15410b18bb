"""Command line entry point: ``constcl <command> ...``.

Each command lives in its own module of :mod:`constcl.commands` exposing
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported lazily so
``constcl --help`` stays fast and a missing optional dependency of one command never breaks the
others.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import math
import os
import signal
import sys
from typing import NoReturn

from constcl.errors import EXPECTED_ERRORS, user_message
from constcl.sigterm import SigtermGuard, Terminated

log = logging.getLogger("constcl")

# command name -> (module, one-line help). Sub-groups ("data") map to a dict of their own.
COMMANDS: dict[str, tuple[str, str] | dict[str, tuple[str, str]]] = {
    "pretrain": ("constcl.commands.pretrain", "self-supervised pretraining (the main job)"),
    "demo": ("constcl.commands.demo", "install check: pretrain on the synthetic world, then probe"),
    "info": ("constcl.commands.info", "parameter counts and FLOPs per clip of a model"),
    "data": {
        "check": ("constcl.commands.data_check",
                  "scan a folder or CSV of videos and report bad files"),
        "synth": ("constcl.commands.data_synth", "generate the synthetic world with ground truth"),
        "preview": ("constcl.commands.data_preview", "draw the two sampled views of a video"),
        "prepare": ("constcl.commands.data_prepare", "transcode a source once into a "
                    "training-ready copy (resumable; loose files or WebDataset shards)"),
    },
    "eval": {
        "classify": ("constcl.commands.eval_classify", "action classification: linear probe, "
                     "fine-tuning, kNN retrieval"),
        "detect": ("constcl.commands.eval_detect", "spatio-temporal action detection (AVA layout)"),
        "track": ("constcl.commands.eval_track", "single-object tracking with SiamFC (OTB layout)"),
        "propagate": ("constcl.commands.eval_propagate", "label propagation (DAVIS-2017 layout)"),
    },
    "extract": ("constcl.commands.extract", "features of every video of a source: one "
                "(snippets, C) .npy per video, resumable"),
    "bench": ("constcl.commands.bench", "pretrain CVRL and ConST-CL over seeds on the synthetic "
              "world, evaluate them and random init on every task"),
    "viz": {
        "regions": ("constcl.commands.viz_regions", "draw the region branch's box matches and "
                    "decoder attention for a video"),
    },
    "convert": {
        "tf": ("constcl.commands.convert_tf", "convert a TF Model Garden CVRL checkpoint to a "
               "constcl backbone.safetensors"),
    },
}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error: ``constcl: error: <prog>: <message> (see <prog>
    --help)`` and exit status 2, like every other expected error, instead of the whole usage
    text followed by the message."""

    def error(self, message: str) -> NoReturn:
        where = "" if self.prog == "constcl" else f"{self.prog}: "
        self.exit(2, f"constcl: error: {where}{message} (see {self.prog} --help)\n")


def _selected(argv: list[str]) -> list[str]:
    """The command words in argv (e.g. ["data", "check"]), without importing anything."""
    return [a for a in argv if not a.startswith("-")][:2]


def _add_command(subparsers: argparse._SubParsersAction, name: str, spec: tuple[str, str],
                 selected: bool) -> None:
    """Add one command; only the selected command's module is imported (for its arguments)."""
    module_name, help_text = spec
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(_module=module_name, _parser=parser)
    if not selected:
        return
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:  # a missing optional dependency
        parser.set_defaults(_import_error=str(err))
        return
    module.add_arguments(parser)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    words = _selected(sys.argv[1:] if argv is None else argv)
    parser = _Parser(
        prog="constcl",
        description="ConST-CL video representation learning: pretrain, inspect and evaluate.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an expected error (bad input) instead of "
                             "one line; also CONSTCL_DEBUG=1")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, spec in COMMANDS.items():
        if isinstance(spec, dict):
            group = subparsers.add_parser(name, help=f"{name} tools")
            group_sub = group.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
            group.set_defaults(_group=group)
            for sub_name, sub_spec in spec.items():
                _add_command(group_sub, sub_name, sub_spec, words == [name, sub_name])
        else:
            _add_command(subparsers, name, spec, words[:1] == [name])
    return parser


class _Formatter(logging.Formatter):
    """The usual ``time LEVEL logger: message`` lines, except a user error (a record with
    ``user_error=True``), which is the bare line ``constcl: error: <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "user_error", False):
            return f"constcl: error: {record.getMessage()}"
        return super().format(record)


def report_error(message: str) -> None:
    """Log ``message`` as the one-line ``constcl: error: ...`` (a log record, so that tests and
    applications that capture logging see it too)."""
    log.error("%s", message, extra={"user_error": True})


def _is_expected(err: BaseException) -> bool:
    """Bad input rather than a bug: a :class:`ConstclError` (the library's own, e.g. the
    training loop's TooManyBadVideos / TooManyBadSteps / NonFiniteWeights or an unreadable
    checkpoint) or one of the standard bad-input exceptions of :data:`EXPECTED_ERRORS`."""
    return isinstance(err, EXPECTED_ERRORS)


def _check_finite_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every float flag must be a finite number: ``float()`` accepts ``nan`` and ``inf``, which
    pass checks such as ``lr > 0`` and then turn every number computed from them into NaN."""
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} must be a finite number; got {value}")


def _debug_requested(args: argparse.Namespace) -> bool:
    return bool(args.debug) or os.environ.get("CONSTCL_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the command's own parser, so the hint names its --help
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    _check_finite_flags(getattr(args, "_parser", parser), args)
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                    datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        handlers=[handler])
    guard = SigtermGuard()  # SIGTERM unwinds like Ctrl-C (constcl/sigterm.py)
    try:
        try:
            return _dispatch(parser, args)
        finally:
            guard.restore()
    except Terminated:
        pass  # below, once the traceback and the DataLoader iterators it holds are gone
    except Exception as err:
        if not _is_expected(err) or _debug_requested(args):
            raise
        report_error(user_message(err))
        return 2
    finally:
        if not guard.terminated:
            guard.close()
    gc.collect()  # shuts the workers down while SIGCHLD is still quiet
    guard.close()
    report_error("stopped by SIGTERM (outputs written so far are kept; running the same "
                 "command again resumes where the command supports it)")
    return 128 + signal.SIGTERM


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command is None:
        parser.print_help()
        return 2
    if not hasattr(args, "_module"):
        args._group.print_help()
        return 2
    if hasattr(args, "_import_error"):
        print(f"constcl: command unavailable ({args._import_error})", file=sys.stderr)
        return 2
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
