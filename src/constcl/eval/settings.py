"""Settings every evaluation task shares: which network, where to run, where to write.

Each task (``constcl.eval.classify``, ``detect``, ``track``, ``propagate``) has one frozen
``Settings`` dataclass that extends :class:`EncoderSettings` (and :class:`FrameEncoderSettings`
for the per-frame tasks), and one ``run(settings) -> dict`` that returns what it writes to
``results.json``. Fields are keyword-only, so required and optional ones can be given in any
order::

    from constcl.eval import classify
    result = classify.run(classify.Settings(checkpoint="runs/demo/backbone.safetensors",
                                            data="data/synth", out="eval/classify"))
    result["metrics"]["top1"]

The command line (``constcl eval TASK --flag ...``) is generated from these classes: every field
is the flag of the same name with ``-`` for ``_`` (the fields of a nested hyper-parameter class,
such as the tracker's, are flags of their own), its default is the field's, its help is the
field's entry in the class docstring (:func:`field_docs`) and its choices are the field's
``choices`` metadata (:func:`choice`), which ``__post_init__`` also checks. A field is documented
once, in the docstring, and that text is both the API reference and ``--help``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constcl.eval.encoder import BRANCHES
from constcl.eval.frame_encoder import ENCODER_STAGES, FRAME_MODES
from constcl.models.r3d import INPUT_NORMS

__all__ = ["ClipProbeSettings", "EncoderSettings", "FrameEncoderSettings", "as_paths",
           "check_choice", "check_choices", "check_finite_fields", "check_positive", "choice",
           "field_docs"]

FLOAT32_MAX = 3.4028234663852886e38


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ``ValueError`` naming the field and its allowed values."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}; got {value!r}")


def choice(default: Any, allowed: Iterable[Any]) -> Any:
    """A dataclass field with a closed set of values: ``field(default=default,
    metadata={"choices": allowed})``; :func:`check_choices` enforces it and the command line
    lists it."""
    return dataclasses.field(default=default, metadata={"choices": tuple(allowed)})


def check_choices(settings: Any) -> None:
    """Raise ``ValueError`` naming the first field whose value is not among its ``choices``
    metadata (a None value passes when None is the field's default: "not given")."""
    for f in dataclasses.fields(settings):
        allowed = f.metadata.get("choices")
        value = getattr(settings, f.name)
        if allowed is not None and not (value is None and f.default is None):
            check_choice(f.name, value, allowed)


_ENTRY = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*): (.*)$")


def field_docs(cls: type) -> dict[str, str]:
    """Each field's entry in the docstrings of ``cls`` and its dataclass bases, one line of text
    per field name: an entry is a line ``name: text`` whose name is a field of ``cls``, with the
    more-indented lines below it; a subclass's entry replaces its base's. The one place a
    field is documented: the API reference shows the docstring, ``--help`` shows this text."""
    names = {f.name for f in dataclasses.fields(cls)}
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        lines = inspect.cleandoc(klass.__dict__.get("__doc__") or "").splitlines()
        current, indent = None, 0
        for line in lines:
            m = _ENTRY.match(line)
            if m and m.group(2) in names:
                current, indent = m.group(2), len(m.group(1))
                docs[current] = m.group(3).strip()
            elif current and line.strip() and len(line) - len(line.lstrip()) > indent:
                docs[current] += " " + line.strip()
            else:
                current = None
    return docs


def check_positive(settings: Any, *names: str, allow_none: bool = False) -> None:
    """Raise ``ValueError`` if any named integer / float field is not > 0."""
    for name in names:
        value = getattr(settings, name)
        if value is None and allow_none:
            continue
        if not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{name} must be positive; got {value!r}")


def check_finite_fields(settings: Any, prefix: str = "") -> None:
    """Raise ``ValueError`` naming the first float field (nested dataclasses included, e.g. the
    tracker's or the propagation's hyper-parameters) that is NaN or inf: such a value passes
    ``> 0`` checks and turns every number computed from it into NaN."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{prefix}{f.name} must be a finite number; got {value}")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_finite_fields(value, f"{prefix}{f.name}.")


def as_paths(settings: Any, *names: str) -> None:
    """Turn str fields into ``Path`` on a frozen dataclass (None stays None)."""
    for name in names:
        value = getattr(settings, name)
        if value is not None and not isinstance(value, Path):
            object.__setattr__(settings, name, Path(value))


@dataclass(frozen=True, kw_only=True)
class EncoderSettings:
    """The frozen network and the run's resources; the base of every task's settings.

    checkpoint: ``backbone.safetensors`` written by ``constcl pretrain``, or ``"random"`` for the
        random-init baseline (then ``backbone`` is required).
    out: output folder (``results.json``, plots, feature cache).
    backbone: backbone name (r3d50, r3d26, r3d_small, r3d_tiny); read from the checkpoint's
        metadata when not given.
    branch: which res5 copy to evaluate: ``global`` (copy 1) or ``local`` (copy 2).
    input_norm: input normalisation of the random-init baseline (not given: ``none``); a
        checkpoint's comes from its metadata, and a value given here must match it.
    seed: seed of the random-init weights and of the classifier training.
    device: ``auto`` (cuda when available), ``cpu``, ``cuda``, ``cuda:1``, ...
    workers: DataLoader worker processes that decode videos (0: in-process).
    cache_dir: feature-cache folder (default ``out/cache``); share one between runs to reuse
        encoded features across output folders.
    """

    checkpoint: str | Path
    out: str | Path
    backbone: str | None = None
    branch: str = choice("global", BRANCHES)
    input_norm: str | None = choice(None, INPUT_NORMS)
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    cache_dir: str | Path | None = None

    def __post_init__(self) -> None:
        check_finite_fields(self)
        as_paths(self, "out", "cache_dir")
        check_choices(self)
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0; got {self.workers}")

    @property
    def feature_cache_dir(self) -> Path:
        """Where the task caches encoded features: ``cache_dir``, else ``out/cache``."""
        return Path(self.cache_dir or Path(self.out) / "cache")

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class ClipProbeSettings(EncoderSettings):
    """The fields of the tasks that encode clips and train a classifier on the frozen features
    (classify, detect); each task's docstring says what they count there.

    frames: frames per clip.
    stride: temporal stride between frames.
    size: short side of the frames.
    epochs: the classifier's SGD epochs.
    lr: the classifier's peak SGD learning rate (on standardised features: 0.1 is robust).
    batch_size: the classifier's batch.
    weight_decay: the classifier's L2 weight decay (CVRL's linear evaluation uses 0).
    encode_batch_size: inputs per forward pass of the frozen encoder.
    """

    frames: int = 32
    stride: int = 2
    size: int = 256
    epochs: int = 100
    lr: float = 0.1
    batch_size: int = 256
    weight_decay: float = 0.0
    encode_batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "frames", "stride", "size", "epochs", "lr", "batch_size",
                       "encode_batch_size")
        if self.lr > FLOAT32_MAX:  # the classifier trains in float32: torch would raise
            raise ValueError(f"lr must be at most {FLOAT32_MAX:.4g} (float32); got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay}")


@dataclass(frozen=True, kw_only=True)
class FrameEncoderSettings(EncoderSettings):
    """How images become feature maps, for the per-frame tasks (track, propagate).

    stage: which stage's map to use; res4 / res5 lose their stride to dilation so every stage
        but res2 (stride 4) is at stride 8.
    frame_mode: ``static``: a frame is an endless still clip (temporal kernels summed, exact and
        cheapest); ``repeat``: the frame repeated ``clip_len`` times, middle time slice.
    clip_len: clip length for ``frame_mode="repeat"``.
    threads: CPU threads for torch during the run (0: leave torch's default). Per-frame work is
        small; on a busy shared CPU 1 thread can be several times faster than 2.
    """

    stage: str = choice("res4", ENCODER_STAGES)
    frame_mode: str = choice("static", FRAME_MODES)
    clip_len: int = 16
    threads: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "clip_len")

    def frame_encoder_spec(self) -> dict[str, object]:
        """The frame-encoder settings (for results and cache keys)."""
        return {"stage": self.stage, "frame_mode": self.frame_mode,
                "clip_len": self.clip_len if self.frame_mode == "repeat" else None}
