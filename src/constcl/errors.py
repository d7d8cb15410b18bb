"""Expected failures: bad input that the user can fix, as opposed to bugs.

Library code raises :class:`ConstclError` (or :class:`DataFileError`, which names the file and
line) when the input is at fault. The command line (``constcl.cli.main``) turns these, and the
standard "bad input" exceptions listed in :data:`EXPECTED_ERRORS`, into one line
``constcl: error: <message>`` and exit code 2; ``--debug`` or ``CONSTCL_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from safetensors import SafetensorError

__all__ = ["ConstclError", "DataFileError", "EXPECTED_ERRORS", "user_message"]


class ConstclError(Exception):
    """An expected failure whose message tells the user what to fix."""


class DataFileError(ConstclError, ValueError):
    """A data or annotation file that cannot be used; the message starts with ``FILE:LINE:``
    (or ``FILE:`` when no single line is at fault). A ``ValueError`` as well, so callers that
    catch ``ValueError`` keep working."""

    def __init__(self, path: str | Path, message: str | None = None,
                 line: int | None = None) -> None:
        if message is None:  # one argument: the whole message (as PyTorch re-raises it)
            super().__init__(str(path))
            self.path, self.line, self.reason = None, None, str(path)
            return
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path: Path | None = Path(path)
        self.line = line
        self.reason = message


# ValueError covers the config's ConfigError and UnicodeDecodeError; OSError covers
# FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError. KeyError,
# TypeError, RuntimeError ... are bugs: they keep their traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ConstclError,
    ValueError,
    OSError,
    yaml.YAMLError,
    SafetensorError,
)

_WORKER_PREFIX = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s*Original ")


def user_message(err: BaseException) -> str:
    """One line describing ``err``.

    An exception re-raised by PyTorch from a DataLoader worker carries the worker's whole
    traceback as its message; only the original message (the traceback's last entry) is kept.
    A YAML syntax error becomes ``line L, column C: problem (context)``; other line breaks
    become ``"; "``.
    """
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return f"{where}{err.problem}" + (f" ({err.context})" if err.context else "")
    text = str(err)
    if _WORKER_PREFIX.match(text):
        lines = text.rstrip("\n").split("\n")
        name = type(err).__name__
        pattern = re.compile(rf"^(?:[\w.]+\.)?{re.escape(name)}: ?")
        for i in range(len(lines) - 1, -1, -1):
            if pattern.match(lines[i]):
                text = "\n".join([pattern.sub("", lines[i], count=1), *lines[i + 1:]])
                break
    parts = [p.strip() for p in text.split("\n") if p.strip()]
    message = "; ".join(parts)
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in message:
        message = f"{message}: {err.filename}"
    return message or type(err).__name__
