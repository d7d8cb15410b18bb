"""``constcl eval track``: OTB-2015 one-pass evaluation of a training-free SiamFC tracker.

The frozen backbone's ``--stage`` map (default res4, dilated to stride 8, see
``frame_encoder``) replaces SiamFC's AlexNet; nothing is trained. Each exemplar or search crop
enters the 3-D network as a still clip (``--frame-mode static``). res4 is the default because
VFS-style frozen-feature trackers read the last stage of the trunk at stride 8: res3 is less
semantic, and res5 is the stage the contrastive heads were trained on and is the most invariant
(good for classification, less so for localisation); ``--stage res3|res5`` compares them.
With no trained adjust layer, the exemplar kernel is made zero-mean per channel by default
(``--center-kernel``; see ``siamfc.SiamFCTracker``); ``--feature-norm l2`` is the other option.

Writes into ``--out``: ``results.json`` (settings; ``metrics``: sequence-averaged
``precision_20``, ``success_auc``, ``success_rate``, ``frames``, ``fps``; the same per sequence;
the averaged curves),
``precision_plots.png`` and ``success_plots.png`` (via ``metrics.tracking.plot_ope_curves``),
and ``boxes/<sequence>.txt`` (one predicted ``x,y,w,h`` row per frame, got10k's result format).
Scores are fractions in [0, 1] (papers print x100). There is no feature cache: the search crops
depend on the tracker's own trajectory, so nothing can be encoded ahead of a run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from constcl.errors import WRITE_ERRNOS, writing
from constcl.eval.encoder import check_encoder_choice, load_encoder, resolve_device
from constcl.eval.finite import finite_features
from constcl.eval.frame_encoder import FrameEncoder, cpu_threads
from constcl.eval.metrics.tracking import OPEResult, evaluate_ope, plot_ope_curves
from constcl.eval.outputs import prepare_out_dir, safe_name, write_json
from constcl.eval.settings import FrameEncoderSettings, as_paths, check_positive, choice
from constcl.eval.track.data import OTBSequence, load_sequences
from constcl.eval.track.siamfc import FEATURE_NORMS, SiamFCConfig, SiamFCTracker
from constcl.runlock import run_lock

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Settings(FrameEncoderSettings):
    """``constcl eval track``: SiamFC on frozen feature maps, OTB one-pass evaluation.

    data: OTB root (folders ``<Seq>/img`` + ``groundtruth_rect*.txt``), or a synthetic world
        root holding ``otb/``.
    sequences: evaluate only N targets, spread evenly over the list sorted by name; quick runs.
    feature_norm: ``none``: correlate the features as they are (SiamFC); ``l2``: unit-length
        feature per cell first (the correlation sums cosines).
    center_kernel: zero-mean exemplar kernel per channel, so the common component of frozen
        ReLU features does not reward busy regions.
    tracker: the SiamFC hyper-parameters (:class:`SiamFCConfig`; on the command line each of
        its fields is a flag).
    """

    data: str | Path
    sequences: int | None = None
    feature_norm: str = choice("none", FEATURE_NORMS)
    center_kernel: bool = True
    tracker: SiamFCConfig = field(default_factory=SiamFCConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        as_paths(self, "data")
        check_positive(self, "sequences", allow_none=True)


def speed_fps(times: np.ndarray) -> float:
    """got10k's speed: mean of ``1 / t`` over frames with ``t > 0``."""
    t = np.asarray(times, dtype=np.float64)
    t = t[t > 0]
    return float(np.mean(1.0 / t)) if len(t) else float("nan")


def run_tracker(tracker_factory, sequences: list[OTBSequence], out: Path
                ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Track every sequence once; write ``boxes/<name>.txt``; returns boxes and speeds."""
    (out / "boxes").mkdir(parents=True, exist_ok=True)
    boxes, speeds = {}, {}
    bar = tqdm(sequences, desc="track", unit="seq")
    for seq in bar:
        pred, times = tracker_factory().track(seq.frames, seq.boxes[0])
        boxes[seq.name], speeds[seq.name] = pred, speed_fps(times)
        np.savetxt(out / "boxes" / f"{safe_name(seq.name)}.txt", pred, fmt="%.3f", delimiter=",")
        bar.set_postfix(seq=seq.name, fps=f"{speeds[seq.name]:.1f}")
    return boxes, speeds


def _scores(res: OPEResult) -> dict[str, float]:
    return {"precision_20": res.precision_score, "success_auc": res.success_score,
            "success_rate": res.success_rate, "frames": res.num_frames}


def run(settings: Settings) -> dict[str, Any]:
    """Load the encoder, track every OTB target, evaluate OPE; write ``results.json``,
    ``boxes/`` and plots to ``settings.out``; return the ``results.json`` content. A second
    process on the same ``out`` is refused (``runlock``)."""
    with run_lock(settings.out, "constcl eval track"), writing(settings.out, WRITE_ERRNOS):
        return _run(settings)


def _run(settings: Settings) -> dict[str, Any]:
    check_encoder_choice(settings)
    start = time.time()
    device = resolve_device(settings.device)
    out = prepare_out_dir(settings.out)
    sequences = load_sequences(settings.data, settings.sequences)
    encoder = FrameEncoder(load_encoder(settings), settings.stage, settings.frame_mode,
                           settings.clip_len).to(device)
    cfg = settings.tracker
    log.info("SiamFC on %s features (stride %d), %d targets", settings.stage, encoder.stride,
             len(sequences))

    features = finite_features(encoder, task="track", checkpoint=settings.checkpoint,
                               what=f"{settings.stage} feature maps of the exemplar / search crops")

    def factory() -> SiamFCTracker:
        return SiamFCTracker(features, encoder.stride, cfg, settings.feature_norm,
                             settings.center_kernel, device)

    with torch.inference_mode(), cpu_threads(settings.threads):
        boxes, speeds = run_tracker(factory, sequences, out)
    per_seq, avg = evaluate_ope(boxes, {s.name: s.boxes for s in sequences})
    label = f"SiamFC {settings.stage} ({Path(settings.checkpoint).name}, {settings.branch})"
    prec_png, succ_png = plot_ope_curves({label: avg}, out, title="OTB-2015 OPE")
    results = {
        "task": "track", "checkpoint": str(settings.checkpoint), "backbone": settings.backbone,
        "branch": settings.branch, "data": str(settings.data), **settings.frame_encoder_spec(),
        "stride": encoder.stride, "feature_norm": settings.feature_norm,
        "center_kernel": settings.center_kernel,
        "tracker": dataclasses.asdict(cfg), "num_sequences": len(sequences),
        "metrics": {**_scores(avg), "fps": float(np.nanmean(list(speeds.values())))},
        "curves": {"precision": avg.precision_curve, "success": avg.success_curve},
        "per_sequence": {name: {**_scores(r), "fps": speeds[name]} for name, r in per_seq.items()},
        "plots": [prec_png.name, succ_png.name], "seconds": time.time() - start,
    }
    write_json(out / "results.json", results)
    return results
