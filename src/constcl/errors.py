"""Expected failures: bad input that the user can fix, as opposed to bugs.

Library code raises :class:`ConstclError` (or :class:`DataFileError`, which names the file and
line) when the input is at fault. The command line (``constcl.cli.main``) turns these, and the
standard "bad input" exceptions listed in :data:`EXPECTED_ERRORS`, into one line
``constcl: error: <message>`` and exit code 2; ``--debug`` or ``CONSTCL_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

import yaml
from safetensors import SafetensorError

__all__ = ["ConstclError", "DataFileError", "EXPECTED_ERRORS", "NonFiniteError",
           "OutputError", "new_file_mode", "torch_load_reason", "user_message", "writing"]


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


class NonFiniteError(ConstclError):
    """Numbers that cannot be used: NaN or inf in a checkpoint's tensors, an evaluation's
    features, scores or classifier weights. No result is computed from them."""


class OutputError(ConstclError, OSError):
    """The output side failed (no space, file too large, name too long, no permission): the
    message names the output path. An ``OSError`` as well, for callers that catch those."""


# errors that only writing can cause: no space, quota, file too large, read-only file system
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


@contextlib.contextmanager
def writing(path: str | Path, errnos: tuple[int, ...] | None = None) -> Iterator[None]:
    """Name ``path`` in an ``OSError`` raised inside the block that names no file (a write
    that fails on ``close()``, e.g. ``[Errno 27] File too large``, says nothing of where), and
    turn a safetensors write failure into an :class:`OutputError` naming it. With ``errnos``,
    only errors of those numbers are renamed (for a block that also reads, e.g. a whole
    evaluation named by its output folder with :data:`WRITE_ERRNOS`)."""
    try:
        yield
    except OutputError:
        raise
    except OSError as err:
        if err.filename is not None or err.errno is None or \
                (errnos is not None and err.errno not in errnos):
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    except SafetensorError as err:  # safetensors reports a failed write as "I/O error: ..."
        if "I/O error" not in str(err):
            raise
        raise OutputError(f"cannot write {path}: {err}") from err


def torch_load_reason(err: BaseException) -> str:
    """One short line for a failed ``torch.load(..., weights_only=True)``: PyTorch's message for
    a pickle with other objects is a paragraph advising ``weights_only=False`` (which would run
    the file's code); random bytes give riddles such as "pop from empty list"."""
    text = str(err)
    if "Weights only load failed" in text:
        return ("not a checkpoint of plain tensors and values (it holds other Python objects, "
                "which are never unpickled here)")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"not a readable PyTorch checkpoint ({type(err).__name__}: {first})"


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


def new_file_mode() -> int:
    """0666 minus this process's umask: the mode ``open()`` gives a new file. Writers that
    create files 0600 (safetensors' ``save_file``) chmod to it, so weight files can be shared."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
