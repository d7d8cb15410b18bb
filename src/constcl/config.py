"""Typed pretraining configuration: dataclasses, YAML files, dotted command-line overrides.

``load_config("configs/demo.yaml", ["train.steps=100", "optim.base_lr=0.1"])`` reads the YAML,
applies the overrides and validates every field before any work starts; errors name the field
and the allowed values. ``to_dict`` / ``save_config`` give the resolved config for the run folder.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from constcl import backbone_file
from constcl.errors import ConstclError
from constcl.models.constcl import LOCAL_SOURCES, VARIANTS, LossWeights
from constcl.models.r3d import BACKBONES, INPUT_NORMS, PADDINGS


class ConfigError(ValueError):
    """An invalid configuration; the message names the field and what is allowed."""


@dataclass
class DataConfig:
    source: str = "synthetic"
    """Videos to train on: a folder tree, a Kinetics-style CSV, a .txt list of paths, WebDataset
    shards (a folder written by constcl data prepare --shards, or a .tar path or brace pattern
    such as /data/k400-{000000..000099}.tar), or 'synthetic' for the built-in synthetic world
    (generated into synth_dir on first use)."""
    root: str = ""
    """Folder that relative paths and Kinetics ids in a CSV / .txt source are resolved against
    ('' = the list file's folder)."""
    synth_dir: str = "~/.cache/constcl/synthetic"
    """Cache folder of the synthetic world (only with source=synthetic)."""
    synth_videos: int = 200
    """Videos in the synthetic world."""
    synth_size: int = 128
    """Frame side of the synthetic videos in pixels."""
    clip_frames: int = 16
    """Frames per clip (docs/spec.md section 1: 16). The res5 map has clip_frames / 2 frames."""
    frame_stride: int = 2
    """Temporal stride between clip frames (docs/spec.md section 1: 2)."""
    size: int = 224
    """Crop side in pixels (docs/spec.md section 1: 224)."""
    short_side: int = 0
    """Resize frames so their short side is this while decoding (0: keep). Large videos decode
    and crop faster with e.g. 256."""
    num_regions: int = 8
    """K boxes per view."""
    color_strength: float = 1.0
    """Scale of the colour-jitter strengths (1.0 = docs/spec.md section 1: brightness,
    contrast, saturation 0.8, hue 0.2). Lower it when the global loss stays at chance on small
    crops or simple videos."""
    region_generator: str = "random"
    """random (default), cues (low-level image proposals) or detections (box files); see
    docs/spec.md section 1."""
    boxes_dir: str = ""
    """Folder of per-video box files for region_generator=detections ('' = next to videos)."""
    workers: int = 4
    """DataLoader worker processes per training process. Raise it if 'data wait' is high."""
    max_bad_fraction: float = 0.05
    """Stop when more than this fraction of the videos cannot be decoded."""
    decoder: str = "auto"
    """Video decoding backend: auto (the one measured fastest for the source kind: see
    BENCHMARKS.md, "Data throughput"), pyav, or torchcodec (optional: pip install
    'constcl[torchcodec]' plus FFmpeg's shared libraries, e.g. apt-get install ffmpeg)."""
    shuffle_buffer: int = 256
    """Shard sources only: samples held in each worker's shuffle buffer (more mixes better but
    holds that many encoded videos in memory per worker, ~0.5-1 MB each for prepared 256 px
    videos)."""


@dataclass
class ModelConfig:
    backbone: str = "r3d50"
    """Backbone family member: r3d50 (paper), r3d26, r3d_small, r3d_tiny (CPU / tests)."""
    variant: str = "constcl"
    """constcl (full method), region (region loss without context), cvrl (global only) or
    supervised (the reference: cross-entropy on the source's class labels, no contrast)."""
    num_classes: int = 0
    """Classes of model.variant=supervised; 0: the number of labels in the training source
    (every video must have one). Ignored by the self-supervised variants."""
    local_source: str = "y"
    """What the region head reads: y (second res5), shared (the global res5) or res4."""
    embed_dim: int = 128
    """Size of the global embedding fed to NT-Xent (docs/spec.md section 2: 128)."""
    context_length: int = 5
    """L_c context frames (odd, at most clip_frames / 2)."""
    decoder_layers: int = 3
    """Region decoder layers (docs/spec.md section 2: 3)."""
    decoder_units: int = 3
    """Independent units ("heads") per decoder layer (docs/spec.md section 2: 3)."""
    decoder_width: int = 128
    """Width of each decoder unit (docs/spec.md section 2: 128)."""
    input_norm: str = "none"
    """Input normalisation before the stem: none (the paper: the [-1, 1] clip as it is) or clip
    (each clip standardised on its own: minus its per-channel mean, divided by its standard
    deviation). The demo and the bench use clip: without it the global branch collapses in
    short CPU runs (docs/method.md, "Input normalisation")."""
    padding: str = "torch"
    """Convolution padding: torch (symmetric, k // 2 each side) or tf_same (TensorFlow's 'same':
    asymmetric for strided convs and the stem pool on even sizes). Weights converted from a TF
    checkpoint (constcl convert tf) compute TF's features only with tf_same and
    model.input_norm=unit (the [0, 1] input range of TF Model Garden video models), so set both
    with model.init_from=<converted file> (pretraining refuses a mismatch). Changes the function
    the network computes, not its parameters: run-altering on resume."""
    init_from: str = ""
    """A backbone.safetensors (from constcl pretrain, or the published CVRL weights converted
    by constcl convert tf) that initialises the trunk and both res5 copies (res5_local from the
    file's res5_local, else its res5_global); the heads stay random. Its backbone, input_norm
    and padding must equal this config's. Empty: random initialisation. On resume the
    checkpoint's weights replace it; changing it is run-altering."""
    zero_init_residual: bool = False
    """Zero the last BN gamma of each block; try it if large-batch training is unstable."""
    sync_bn: bool = True
    """Synchronised BatchNorm across processes (docs/spec.md section 4). Per-GPU statistics
    with small per-GPU batches make BN a shortcut for the contrastive task; keep it on for
    multi-GPU."""


@dataclass
class OptimConfig:
    name: str = "sgd"
    """sgd (momentum) or lars. Try lars if the loss diverges at large batch sizes."""
    base_lr: float = 0.32
    """Learning rate per 256 videos: lr = base_lr * global_batch / 256 (global batch counts
    accumulation steps too)."""
    momentum: float = 0.9
    """SGD / LARS momentum (docs/spec.md section 4: 0.9)."""
    weight_decay: float = 1e-6
    """L2 on conv and linear weights only (not BN, not biases)."""
    warmup_steps: int = 2500
    """Linear warm-up from 0, then cosine decay to final_lr_fraction * lr."""
    final_lr_fraction: float = 0.0
    """The cosine ends at this fraction of the peak rate (docs/spec.md section 4: 0)."""
    clip_grad_norm: float = 0.0
    """Clip the global gradient norm to this (0: off)."""
    accumulation_steps: int = 1
    """Micro-batches per optimiser step. Note: negatives come from one micro-batch only."""
    lars_eta: float = 0.001
    """LARS trust coefficient."""
    local_lr_scale: float = 0.0
    """Learning-rate multiplier of the parameters only the region loss reaches (the local res5
    copy and the region head); 0 = auto = 1 / loss.region_weight, so they train on the region
    loss as fast as the trunk trains on the global loss (docs/method.md has the arithmetic).
    Their weight decay is divided by the same factor. Under LARS it applies to their BN and bias
    parameters only (the trust ratio already normalises the others). 1 = the reference's
    coupling, where the local branch barely moves."""


@dataclass
class TrainConfig:
    steps: int = 200000
    """Optimiser steps."""
    batch_size: int = 64
    """Videos per process per micro-batch (global batch = batch_size x processes x accum)."""
    seed: int = 0
    """Seed of the weights, the data order and every augmentation."""
    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    precision: str = "bf16"
    """bf16 (autocast; GPU) or fp32. On CPU bf16 is slow and fp32 is used unless forced."""
    channels_last: bool = True
    """channels_last_3d memory format on GPU (ignored on CPU)."""
    compile: bool = False
    """torch.compile the model (GPU; first steps are slow while compiling)."""
    cpu_threads: int = 0
    """Intra-op threads when training on CPU (0: CPU cores minus data.workers, at least 1).
    More threads than free cores makes PyTorch's CPU kernels many times slower."""
    deterministic: bool = False
    """Deterministic kernels (slower): bit-identical reruns and resumes on CPU."""
    out_dir: str = "runs"
    """Parent folder of run folders (must be shared by all nodes of a multi-node run)."""
    run_name: str = ""
    """Run folder name under out_dir ('' = a time stamp)."""
    log_every: int = 10
    """Steps between metrics.jsonl / TensorBoard lines (each line averages its steps)."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (one is always written at the end)."""
    keep_checkpoints: int = 3
    """Newest checkpoints kept in the run folder."""
    resume: str = "auto"
    """auto (latest loadable checkpoint of the run folder; a folder without one that holds a
    previous run's backbone.safetensors, summary.json or checkpoints is refused, while the
    metrics of a run killed before its first checkpoint are moved aside and the run starts
    afresh), none or restart (start over at step 0; a previous run's outputs in the folder are
    first moved to RUN/replaced-TIMESTAMP/), or a checkpoint path. A resume compares this
    config with the checkpoint's: see train.resume_allow_changes."""
    resume_allow_changes: list[str] = field(default_factory=list)
    """Run-altering fields that may differ from the checkpoint's config on resume: a list of
    dotted names (e.g. [train.steps, optim.base_lr]; comma-separated on the command line) or
    'all'. Run-altering: data.* except data.workers, loss.*, optim.*, train.steps,
    train.batch_size, train.seed, train.precision, model.input_norm, model.zero_init_residual,
    model.sync_bn, model.padding, model.init_from;
    each allowed change is logged as a WARNING and recorded in RUN/config_history.jsonl. Shape
    fields (model.backbone, variant, local_source, embed_dim, num_classes, context_length,
    decoder_layers, decoder_units, decoder_width) can never change on resume. All other fields
    (out_dir, run_name, log_every, checkpoint_every, keep_checkpoints, progress, time_limit_minutes,
    max_bad_steps, device, cpu_threads, channels_last, compile, deterministic, resume,
    resume_allow_changes, data.workers) may always change."""
    max_bad_steps: int = 5
    """Stop after this many consecutive steps with a NaN / Inf loss (each one is skipped)."""
    time_limit_minutes: float = 0.0
    """Stop (with a checkpoint) after this much training time (0: no limit)."""
    progress: str = "auto"
    """auto (a bar on a terminal, plain lines otherwise), bar or plain."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossWeights = field(default_factory=LossWeights)  # models.LossWeights
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


CHOICES: dict[str, tuple[str, ...]] = {
    "data.region_generator": ("random", "cues", "detections"),
    "data.decoder": ("auto", "pyav", "torchcodec"),
    "model.backbone": tuple(sorted(BACKBONES)),
    "model.variant": VARIANTS,
    "model.local_source": LOCAL_SOURCES,
    "model.input_norm": INPUT_NORMS,
    "model.padding": PADDINGS,
    "optim.name": ("sgd", "lars"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.precision": ("bf16", "fp32"),
    "train.progress": ("auto", "bar", "plain"),
}

POSITIVE = ("data.synth_videos", "data.synth_size", "data.clip_frames", "data.frame_stride",
            "data.size", "data.num_regions", "data.shuffle_buffer", "model.embed_dim",
            "model.decoder_layers", "model.decoder_units", "model.decoder_width",
            "loss.global_temperature", "loss.region_temperature", "optim.base_lr",
            "optim.accumulation_steps", "train.steps", "train.batch_size", "train.log_every",
            "train.checkpoint_every", "train.keep_checkpoints", "train.max_bad_steps")
NON_NEGATIVE = ("data.short_side", "data.workers", "data.color_strength", "train.cpu_threads",
                "loss.global_weight", "loss.region_weight",
                "optim.momentum", "optim.weight_decay", "optim.warmup_steps",
                "optim.clip_grad_norm", "optim.lars_eta", "optim.local_lr_scale",
                "train.time_limit_minutes")

# Classification of the fields for a resume (see train.resume_allow_changes): a checkpoint
# cannot be loaded into another shape, run-altering fields need permission, the rest is free.
RESUME_SHAPE = ("model.backbone", "model.variant", "model.local_source", "model.embed_dim",
                "model.num_classes",
                "model.context_length", "model.decoder_layers", "model.decoder_units",
                "model.decoder_width")
RESUME_HARMLESS = ("data.workers", "train.device", "train.channels_last", "train.compile",
                   "train.cpu_threads", "train.deterministic", "train.out_dir", "train.run_name",
                   "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                   "train.resume", "train.resume_allow_changes", "train.max_bad_steps",
                   "train.time_limit_minutes", "train.progress")


def resume_kind(key: str) -> str:
    """How a dotted config field may change on resume: "shape" (never: the checkpoint's
    parameters would not fit), "harmless" (always) or "run" (only when listed in
    ``train.resume_allow_changes``)."""
    if key in RESUME_SHAPE:
        return "shape"
    if key in RESUME_HARMLESS:
        return "harmless"
    return "run"


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Convert a YAML / command-line value to the field's type, or raise ConfigError."""
    kind = typing.get_origin(annotation)
    if kind is list:
        if value is None:
            return []
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return [v.strip() for v in value]
        raise ConfigError(f"{name}: expected a list of strings or a comma-separated string, "
                          f"got {value!r}")
    if kind in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or value == "null":
            return None
        return _coerce(value, options[0], name)
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if annotation is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(float(value)) if isinstance(value, str) else int(value)
        if annotation is float:
            return float(value)
        if annotation is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise ConfigError(f"{name}: expected {getattr(annotation, '__name__', annotation)}, "
                      f"got {value!r}")


def _set(cfg: Config, dotted: str, value: Any) -> None:
    section_name, _, key = dotted.partition(".")
    sections = _fields(cfg)
    if section_name not in sections or not key:
        raise ConfigError(f"unknown config key {dotted!r}; sections are {sorted(sections)} "
                          f"(write section.key=value, e.g. train.steps=100)")
    section = getattr(cfg, section_name)
    keys = _fields(section)
    if key not in keys:
        raise ConfigError(f"unknown config key {dotted!r}; allowed keys in {section_name!r}: "
                          f"{sorted(keys)}")
    hints = typing.get_type_hints(type(section))
    setattr(section, key, _coerce(value, hints[key], dotted))


def apply_dict(cfg: Config, values: dict[str, Any]) -> None:
    """Apply a nested dict such as one read from YAML."""
    for section, entries in values.items():
        if not isinstance(entries, dict):
            raise ConfigError(f"config section {section!r} must be a mapping of keys to values")
        for key, value in entries.items():
            _set(cfg, f"{section}.{key}", value)


def apply_overrides(cfg: Config, overrides: list[str]) -> None:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, _, raw = item.partition("=")
        _set(cfg, key.strip(), yaml.safe_load(raw) if raw.strip() else "")


def validate(cfg: Config) -> None:
    """Check every field; raise ConfigError naming the first bad field and the allowed values."""
    flat = {f"{s}.{k}": v for s, sec in to_dict(cfg).items() for k, v in sec.items()}
    for key, value in flat.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} must be a finite number (not inf or nan)")
    for key, allowed in CHOICES.items():
        if flat[key] not in allowed:
            raise ConfigError(f"{key}={flat[key]!r} is not allowed; choose one of {list(allowed)}")
    for key in POSITIVE:
        if not flat[key] > 0:
            raise ConfigError(f"{key}={flat[key]!r} must be > 0")
    for key in NON_NEGATIVE:
        if not flat[key] >= 0:
            raise ConfigError(f"{key}={flat[key]!r} must be >= 0")
    length, feature_frames = cfg.model.context_length, max(cfg.data.clip_frames // 2, 1)
    if length <= 0 or length % 2 == 0 or length > feature_frames:
        raise ConfigError(f"model.context_length={length} must be an odd number from 1 to "
                          f"clip_frames / 2 = {feature_frames} (e.g. 1, 3, 5)")
    if not 0 <= cfg.optim.final_lr_fraction <= 1:
        raise ConfigError("optim.final_lr_fraction must be in [0, 1]")
    if not 0 <= cfg.data.max_bad_fraction <= 1:
        raise ConfigError("data.max_bad_fraction must be in [0, 1]")
    source = cfg.data.source
    if not source:
        raise ConfigError("data.source is required: a folder of videos, a Kinetics-style CSV, "
                          "a .txt list of paths, or 'synthetic'")
    if (source != "synthetic" and not Path(source).expanduser().exists()
            and not source.strip().endswith(".tar")):  # shard patterns are expanded later
        raise ConfigError(f"data.source={source!r} does not exist; give a folder of videos, a "
                          f"CSV, a .txt list of paths, a shard folder or .tar pattern, or "
                          f"'synthetic'")
    init_from = cfg.model.init_from
    if init_from and not Path(init_from).expanduser().is_file():
        raise ConfigError(f"model.init_from={init_from!r} does not exist; give a "
                          "backbone.safetensors (constcl pretrain / constcl convert tf)")
    if init_from:  # before any run folder is written: its weights must fit this network
        where = f"model.init_from={init_from!r}"
        try:
            meta = backbone_file.read_meta(Path(init_from).expanduser(), where)
            backbone_file.check_compatible(meta, where, backbone=cfg.model.backbone,
                                           input_norm=cfg.model.input_norm,
                                           padding=cfg.model.padding, prefix="model.")
        except (ConstclError, ValueError) as err:
            raise ConfigError(str(err)) from err
    _validate_resume_fields(cfg, flat)
    if cfg.data.region_generator == "detections" and cfg.model.variant in ("cvrl", "supervised"):
        raise ConfigError(f"data.region_generator=detections is useless with "
                          f"model.variant={cfg.model.variant}")
    if cfg.model.num_classes < 0 or cfg.model.num_classes == 1:
        raise ConfigError(f"model.num_classes must be 0 (from the data) or at least 2; got "
                          f"{cfg.model.num_classes}")


RESUME_VALUES = ("auto", "none", "restart")


def _validate_resume_fields(cfg: Config, flat: dict[str, Any]) -> None:
    resume = cfg.train.resume
    if resume not in RESUME_VALUES and not Path(resume).expanduser().is_file():
        raise ConfigError(f"train.resume={resume!r} is neither one of {list(RESUME_VALUES)} nor "
                          f"an existing checkpoint file")
    run_fields = sorted(k for k in flat if resume_kind(k) == "run")
    allowed = cfg.train.resume_allow_changes
    if "all" in allowed and len(allowed) > 1:
        raise ConfigError(f"train.resume_allow_changes={allowed!r}: give 'all' alone or a list "
                          f"of field names")
    for key in allowed:
        if key == "all" or key in run_fields:
            continue
        if key in flat and resume_kind(key) == "shape":
            raise ConfigError(f"train.resume_allow_changes: {key} can never change on resume (it "
                              f"changes the parameter shapes); start a new run instead")
        if key in flat:
            raise ConfigError(f"train.resume_allow_changes: {key} may always change on resume; "
                              f"leave it out")
        raise ConfigError(f"train.resume_allow_changes: unknown field {key!r}; allowed: 'all' "
                          f"or any of {run_fields}")


def to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(cfg)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then the overrides; validated."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
        apply_dict(cfg, loaded)
    apply_overrides(cfg, overrides or [])
    validate(cfg)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def field_docs() -> dict[str, str]:
    """Docstring of every field (``section.key`` -> text), read from the source of each
    section's dataclass (this module's, and ``models.LossWeights`` for ``loss``)."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    sections = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = sections[section.name]
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
        for stmt, nxt in zip(body, body[1:] + [None], strict=True):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                    and isinstance(getattr(nxt, "value", None), ast.Constant)):
                docs[f"{section.name}.{stmt.target.id}"] = " ".join(str(nxt.value.value).split())
    return docs
