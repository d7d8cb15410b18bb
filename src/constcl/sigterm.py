"""SIGTERM for the command line: unwind cleanly, and still end when the process cannot.

Inside :class:`SigtermGuard`, SIGTERM (a batch system's stop, ``kill``, ``timeout``) raises
:class:`Terminated` in the main thread, like Ctrl-C: worker pools are stopped, folder locks
released and temporary files removed on the way out, and ``constcl.cli.main`` prints one line
and exits with 128 + 15. Without it, Python dies at once (no clean-up, pool workers orphaned,
spawn workers printing BrokenPipeError tracebacks).

Two details make that work with worker processes:

* Forked workers (DataLoader, process pools) inherit the handler; in them it exits quietly with
  status 0 (a worker killed by a signal makes PyTorch's SIGCHLD handler raise "DataLoader worker
  ... is killed by signal" in the main process while it unwinds).
* The main process silences SIGCHLD once terminating; ``main`` restores it when done.

A Python signal handler only runs when the interpreter gets control back, and a process blocked
in C code (a collective waiting for a rank that died, a stuck read) would never end. A watchdog
thread sees the signal through ``signal.set_wakeup_fd`` and, if the process has not finished
within :data:`GRACE_SECONDS`, kills its child processes and exits with 128 + 15.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading

__all__ = ["GRACE_SECONDS", "SigtermGuard", "Terminated"]

GRACE_SECONDS = 30.0


class Terminated(BaseException):
    """SIGTERM received by the main process (a ``BaseException``, like ``KeyboardInterrupt``,
    so that ``except Exception`` blocks do not swallow it)."""


def _no_wakeup_fd_in_child() -> None:
    """A forked child must not write its signals into the parent's watchdog pipe."""
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:  # not forked from the main thread: nothing was inherited there
        pass


os.register_at_fork(after_in_child=_no_wakeup_fd_in_child)


class SigtermGuard:
    """Installs the SIGTERM handling on entry (main thread only; elsewhere it does nothing);
    :meth:`restore` puts the previous SIGTERM handler and wake-up fd back, :meth:`close` also
    stops the watchdog and restores SIGCHLD (after the unwinding)."""

    def __init__(self) -> None:
        self.terminated = False
        self.active = threading.current_thread() is threading.main_thread()
        self._stop = threading.Event()
        self._saved_sigchld: object = None
        if not self.active:
            return
        self._main_pid = os.getpid()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._previous = signal.signal(signal.SIGTERM, self._handler)
        threading.Thread(target=self._watch, name="constcl-sigterm", daemon=True).start()

    def _handler(self, signum: int, frame: object) -> None:
        if os.getpid() != self._main_pid:
            os._exit(0)  # a forked worker: leave quietly, the main process reports it
        self.terminated = True
        if self._saved_sigchld is None:
            self._saved_sigchld = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        raise Terminated()

    def _watch(self) -> None:
        try:
            while data := os.read(self._read_fd, 64):  # b"": closed by close()
                if signal.SIGTERM in data:
                    if not self._stop.wait(GRACE_SECONDS):
                        for child in multiprocessing.active_children():
                            child.kill()
                        os.write(2, f"constcl: error: stopped by SIGTERM (still busy after "
                                    f"{GRACE_SECONDS:g} s, e.g. blocked in a collective; "
                                    "ended without clean-up)\n".encode())
                        os._exit(128 + signal.SIGTERM)
                    return
        except OSError:
            pass
        finally:
            os.close(self._read_fd)

    def restore(self) -> None:
        """Put back the SIGTERM handler and wake-up fd that were there before."""
        if self.active:
            signal.signal(signal.SIGTERM, self._previous)
            signal.set_wakeup_fd(self._previous_wakeup)

    def close(self) -> None:
        """After the unwinding: stop the watchdog, restore SIGCHLD."""
        if not self.active:
            return
        self._stop.set()
        os.close(self._write_fd)
        if self._saved_sigchld is not None:
            signal.signal(signal.SIGCHLD, self._saved_sigchld)
