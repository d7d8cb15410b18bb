"""Fault injection for the kill-matrix tests (environment variable ``CONSTCL_FAULT``).

``CONSTCL_FAULT=KIND:STEP`` makes the matching point of a run misbehave once:

* ``kill_during_checkpoint:STEP``: SIGKILL half-way through writing the checkpoint of STEP;
* ``kill_after_checkpoint:STEP``: SIGKILL right after that checkpoint is saved;
* ``corrupt_weights:STEP``: set a weight to NaN after the update of STEP (the train loop);
* ``kill_at_step:STEP``: SIGKILL after STEP is logged;
* ``kill_during_export:STEP``: SIGKILL after the backbone of the run ending at STEP is written,
  before ``summary.json``;
* ``kill_during_probe:0``: SIGKILL in a linear-probe evaluation after the training split's
  features are cached, before the probe is fitted and ``results.json`` written (the demo's
  final probe);
* ``kill_during_extract:N``: SIGKILL in ``constcl extract`` when the N-th video of the run has
  its feature files written under their temporary names, before they are renamed.

Nothing happens when the variable is unset; it is read at each point, so a test sets it for
one subprocess only.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "CONSTCL_FAULT"


def fault(kind: str, step: int) -> bool:
    """Whether the test fault ``kind:step`` is requested."""
    return os.environ.get(FAULT_ENV, "") == f"{kind}:{step}"


def kill_on_fault(kind: str, step: int) -> None:
    """SIGKILL this process if the test fault ``kind:step`` is requested."""
    if fault(kind, step):
        os.kill(os.getpid(), signal.SIGKILL)
