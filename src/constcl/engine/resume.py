"""Resuming safely: a resume may not mix runs, and the run folder's records stay continuous.

* :func:`check_resume_config` compares the new config with the one saved in the checkpoint
  (before anything is written to the run folder): shape fields can never change, run-altering
  fields only when ``train.resume_allow_changes`` lists them (see ``constcl.config``).
* :func:`previous_outputs` / :func:`move_aside`: a folder that holds a previous run's outputs
  but no loadable checkpoint is refused under ``train.resume=auto``; ``none`` / ``restart``
  move those outputs to ``replaced-TIMESTAMP/`` first.
* :func:`truncate_metrics` drops the ``metrics.jsonl`` lines after the resumed step (atomic
  rewrite), so each step appears once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from constcl.config import Config, ConfigError, resume_kind, to_dict

log = logging.getLogger("constcl.train")

HISTORY = "config_history.jsonl"
"""Allowed config changes at resumes, one JSON record per resume: {"step", "changes"}."""
METRICS = "metrics.jsonl"
PREVIOUS_OUTPUTS = ("backbone.safetensors", "metrics.jsonl", "summary.json", "checkpoints",
                    "tensorboard", HISTORY)
"""What a previous run leaves in its folder (``config.yaml`` and ``git_sha.txt`` are rewritten)."""
BLOCKING_OUTPUTS = ("backbone.safetensors", "summary.json", "checkpoints")
"""Outputs that show a previous run got somewhere: ``train.resume=auto`` without a loadable
checkpoint refuses to start over on top of them. The others (the metrics and TensorBoard events
of a run killed before its first checkpoint) are just moved aside, so running the same command
again after such a kill starts the run afresh."""


SYNTHETIC_WORLD_FIELDS = ("data.synth_dir", "data.synth_videos", "data.synth_size")
"""Fields that only matter with ``data.source=synthetic``."""


def _flat(values: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, entries in values.items()
            if isinstance(entries, dict) for key, value in entries.items()}


def config_changes(old: dict[str, Any], new: dict[str, Any],
                   defaults: dict[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
    """{dotted field: (old value, new value)} of the fields that differ between two nested
    dicts. A field the old config lacks (added to the library after the checkpoint was written)
    takes its value from ``defaults`` (the run then behaved as that default); fields unknown to
    the new config, or to both ``old`` and ``defaults``, are skipped."""
    a, b = {**_flat(defaults or {}), **_flat(old)}, _flat(new)
    return {key: (a[key], b[key]) for key in sorted(a.keys() & b.keys()) if a[key] != b[key]}


def _describe(changes: dict[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())


def check_resume_config(cfg: Config, state: dict[str, Any], source: str
                        ) -> dict[str, tuple[Any, Any]]:
    """Compare ``cfg`` with the config stored in checkpoint ``state`` (read from ``source``).

    Raises ConfigError naming every changed field (old and new values) when a shape field
    changed, or a run-altering field changed that ``train.resume_allow_changes`` does not list.
    Returns the allowed run-altering changes (each also logged as a WARNING).
    """
    saved = state.get("config")
    if saved is None:
        log.warning("checkpoint %s holds no config; cannot check that it belongs to this run",
                    source)
        return {}
    old = json.loads(saved) if isinstance(saved, str) else saved
    changes = config_changes(old, to_dict(cfg), defaults=to_dict(Config()))
    old_source = changes.get("data.source", (cfg.data.source,))[0]
    if old_source != "synthetic" and cfg.data.source != "synthetic":
        # the built-in world's settings are inert when neither run trained on it (e.g. a
        # preset's default world size changed after a bench run on its own world)
        changes = {k: v for k, v in changes.items() if k not in SYNTHETIC_WORLD_FIELDS}
    shape = {k: v for k, v in changes.items() if resume_kind(k) == "shape"}
    if shape:
        raise ConfigError(f"cannot resume from {source}: the model differs from the "
                          f"checkpoint's ({_describe(shape)}); its weights do not fit. Use the "
                          f"checkpoint's values, or start a new run (another train.run_name)")
    run = {k: v for k, v in changes.items() if resume_kind(k) == "run"}
    allowed = cfg.train.resume_allow_changes
    refused = {k: v for k, v in run.items() if "all" not in allowed and k not in allowed}
    if refused:
        names = ",".join(refused)
        raise ConfigError(f"cannot resume from {source}: these fields differ from the "
                          f"checkpoint's config and would change the run: {_describe(refused)}. "
                          f"Use the checkpoint's values, start a new run (another "
                          f"train.run_name), or allow them with "
                          f"train.resume_allow_changes={names}")
    for key, (old_value, new_value) in run.items():
        log.warning("resuming with a changed config: %s %r -> %r (train.resume_allow_changes)",
                    key, old_value, new_value)
    return run


def append_config_history(run_dir: Path, step: int,
                          changes: dict[str, tuple[Any, Any]]) -> None:
    """Append ``{"step": step, "changes": {field: [old, new]}}`` to ``config_history.jsonl``."""
    record = {"step": step, "changes": {k: [old, new] for k, (old, new) in changes.items()}}
    with open(run_dir / HISTORY, "a") as f:
        f.write(json.dumps(record) + "\n")


def previous_outputs(run_dir: Path, names: tuple[str, ...] = PREVIOUS_OUTPUTS) -> list[Path]:
    """Those of ``names`` that an earlier run left in ``run_dir`` (empty files and folders do
    not count)."""
    found = []
    for name in names:
        path = run_dir / name
        if path.is_file() and path.stat().st_size:
            found.append(path)
        elif path.is_dir() and any(not p.name.startswith(".") for p in path.iterdir()):
            found.append(path)  # (hidden entries: a checkpoint write torn by a kill)
    return found


def refuse_to_start_over(run_dir: Path, found: list[Path]) -> ConfigError:
    names = ", ".join(p.name for p in found)
    return ConfigError(f"train.resume=auto found no loadable checkpoint in {run_dir}, but the "
                       f"folder holds a previous run's outputs ({names}); refusing to start over "
                       f"on top of them. Set train.resume=restart (they are moved to "
                       f"{run_dir}/replaced-TIMESTAMP/), another train.run_name, or "
                       f"train.resume=PATH of a checkpoint")


def move_aside(run_dir: Path, found: list[Path]) -> Path:
    """Move ``found`` into ``run_dir/replaced-TIMESTAMP/``; returns that folder."""
    target = run_dir / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 1
    while target.exists():
        target = run_dir / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
        suffix += 1
    target.mkdir()
    for path in found:
        os.replace(path, target / path.name)
    return target


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Drop the ``metrics.jsonl`` lines after ``step`` (and unreadable ones, e.g. a line torn
    by a kill) by an atomic rewrite; returns how many lines were dropped."""
    path = run_dir / METRICS
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record_step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            dropped += 1
            continue
        if record_step <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "w") as f:
            f.write("".join(line + "\n" for line in kept))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped
