"""Run logging on the main process: JSON lines, TensorBoard, and a progress bar or plain lines;
and the device-side window of metrics that the training loop reads once per log interval."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import torch

from constcl import dist

log = logging.getLogger("constcl.train")


class MetricWindow:
    """Sums of the step metrics over one log interval, kept on the device.

    ``add`` takes a step's metrics (any keys: every key the model returns flows through) and
    its ``ok`` flag; skipped steps add nothing. ``means`` gives the per-step means over the
    applied steps, averaged over processes (one all-reduce, no host read; NaN for a key when no
    step of the interval was applied, which :func:`read_on_host` drops like any non-finite
    value).
    """

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.sums: torch.Tensor | None = None
        self.applied: torch.Tensor | None = None

    def add(self, metrics: dict[str, torch.Tensor], ok: torch.Tensor) -> None:
        if not metrics:
            return
        if self.sums is not None and list(metrics) != self.keys:
            raise ValueError(f"the model's metric keys changed within a log interval: "
                             f"{self.keys} -> {list(metrics)}")
        self.keys = list(metrics)
        values = torch.stack([v.detach().double() for v in metrics.values()])
        values = torch.where(ok, values, torch.zeros_like(values))
        applied = ok.double()
        if self.sums is None:
            self.sums, self.applied = values, applied
        else:
            self.sums, self.applied = self.sums + values, self.applied + applied

    def means(self) -> dict[str, torch.Tensor]:
        """Per-step means of the applied steps (0-dim device tensors), averaged over processes;
        the window is emptied."""
        if self.sums is None:
            return {}
        values = dist.all_reduce_sum_no_grad(self.sums / self.applied) / dist.world_size()
        out = dict(zip(self.keys, values.unbind(), strict=True))
        self.sums = self.applied = None
        return out


def read_on_host(values: dict[str, torch.Tensor | None]) -> dict[str, float]:
    """The one host read of a log interval: every 0-dim tensor of ``values`` stacked into one
    float64 vector and copied to the CPU at once (on a GPU, the one wait for the device);
    None and non-finite values are left out."""
    keys = [k for k, v in values.items() if v is not None]
    if not keys:
        return {}
    packed = torch.stack([values[k].detach().double().reshape(()) for k in keys])
    numbers = packed.cpu().tolist()
    return {k: v for k, v in zip(keys, numbers, strict=True) if math.isfinite(v)}


class RankFilter(logging.Filter):
    """Let records through on rank 0 only (install on the root handlers of other ranks)."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0


class RunLogger:
    """Writes ``metrics.jsonl`` and TensorBoard events under ``run_dir``; shows progress.

    ``progress``: "bar" (tqdm with ETA, loss and clips/s), "plain" (one line per log interval),
    or "auto" (bar on a terminal). Disabled loggers (ranks > 0) do nothing. ``metrics.jsonl`` is
    appended to: on resume, the caller first drops its lines after ``start_step``
    (``resume.truncate_metrics``); TensorBoard hides the events after ``start_step`` itself.
    """

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, progress: str = "auto",
                 enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = None
        self.writer = None
        if not enabled:
            return
        self.jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency, but keep training if it is broken
            log.warning("tensorboard is not importable; writing metrics.jsonl only")
        else:
            # a resume hides the events a killed run logged after its checkpoint
            self.writer = SummaryWriter(str(run_dir / "tensorboard"),
                                        purge_step=start_step + 1 if start_step else None)
        use_bar = progress == "bar" or (progress == "auto" and sys.stderr.isatty())
        if use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step",
                            dynamic_ncols=True, smoothing=0.1)
        self.total = total_steps
        self.started = time.time()
        self.start_step = start_step

    def update(self, step: int) -> None:
        """Per-step progress (the bar only; its loss and clips/s change at log intervals, so
        that no step waits for the device)."""
        if self.bar is not None:
            self.bar.update(1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """One JSON line and TensorBoard scalars; a plain text line when there is no bar."""
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time() - self.started, 2), **metrics}
        self.jsonl.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}",
                                 clips_s=f"{metrics.get('clips_per_s', 0.0):.1f}", refresh=False)
        else:
            done = step - self.start_step
            elapsed = time.time() - self.started
            eta = elapsed / max(done, 1) * (self.total - step)
            log.info("step %d/%d  loss %.4f  acc %.3f  lr %.4g  %.1f clips/s  data wait %.0f%%  "
                     "eta %s", step, self.total, metrics.get("loss", float("nan")),
                     metrics.get("global_accuracy",  # the supervised reference's own accuracy
                                 metrics.get("train_accuracy", float("nan"))),
                     metrics.get("lr", 0.0),
                     metrics.get("clips_per_s", 0.0), 100 * metrics.get("data_wait_share", 0.0),
                     time.strftime("%H:%M:%S", time.gmtime(eta)))

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            log.info(text)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.jsonl.close()
