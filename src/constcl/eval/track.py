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

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from constcl.eval.common import (
    add_encoder_arguments,
    load_encoder,
    prepare_out_dir,
    resolve_device,
    write_json,
)
from constcl.eval.frame_encoder import (
    FrameEncoder,
    add_frame_encoder_arguments,
    cpu_threads,
    frame_encoder_spec,
)
from constcl.eval.metrics.tracking import OPEResult, evaluate_ope, plot_ope_curves
from constcl.eval.otb import OTBSequence, load_sequences
from constcl.eval.siamfc import CONFIG_HELP, FEATURE_NORMS, SiamFCConfig, SiamFCTracker

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Encoder, data and SiamFC options of ``constcl eval track``."""
    add_encoder_arguments(parser)
    parser.add_argument("--data", required=True, type=Path,
                        help="OTB root (folders <Seq>/img + groundtruth_rect*.txt), or a "
                             "synthetic world root holding otb/")
    parser.add_argument("--sequences", type=int, default=None,
                        help="evaluate only the first N targets (sorted by name); quick runs")
    add_frame_encoder_arguments(parser, default_stage="res4")
    parser.add_argument("--feature-norm", choices=FEATURE_NORMS, default="none",
                        help="none: correlate the features as they are (SiamFC); l2: unit-length "
                             "feature per cell first (the correlation sums cosines)")
    parser.add_argument("--center-kernel", action=argparse.BooleanOptionalAction, default=True,
                        help="zero-mean exemplar kernel per channel, so the common component "
                             "of frozen ReLU features does not reward busy regions")
    defaults = SiamFCConfig()
    for field in dataclasses.fields(SiamFCConfig):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default),
                            default=getattr(defaults, field.name),
                            help=f"SiamFC: {CONFIG_HELP[field.name]} (default %(default)s)")


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
        np.savetxt(out / "boxes" / f"{seq.name}.txt", pred, fmt="%.3f", delimiter=",")
        bar.set_postfix(seq=seq.name, fps=f"{speeds[seq.name]:.1f}")
    return boxes, speeds


def _scores(res: OPEResult) -> dict[str, float]:
    return {"precision_20": res.precision_score, "success_auc": res.success_score,
            "success_rate": res.success_rate, "frames": res.num_frames}


def run(args: argparse.Namespace) -> int:
    """Load the encoder, track every OTB target, evaluate OPE, write JSON and plots."""
    start = time.time()
    device = resolve_device(args.device)
    out = prepare_out_dir(args.out)
    sequences = load_sequences(args.data, args.sequences)
    encoder = FrameEncoder(load_encoder(args), args.stage, args.frame_mode,
                           args.clip_len).to(device)
    cfg = SiamFCConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SiamFCConfig)})
    log.info("SiamFC on %s features (stride %d), %d targets", args.stage, encoder.stride,
             len(sequences))

    def factory() -> SiamFCTracker:
        return SiamFCTracker(encoder, encoder.stride, cfg, args.feature_norm,
                             args.center_kernel, device)

    with torch.inference_mode(), cpu_threads(args.threads):
        boxes, speeds = run_tracker(factory, sequences, out)
    per_seq, avg = evaluate_ope(boxes, {s.name: s.boxes for s in sequences})
    label = f"SiamFC {args.stage} ({Path(args.checkpoint).name}, {args.branch})"
    prec_png, succ_png = plot_ope_curves({label: avg}, out, title="OTB-2015 OPE")
    results = {
        "task": "track", "checkpoint": str(args.checkpoint), "backbone": args.backbone,
        "branch": args.branch, "data": str(args.data), **frame_encoder_spec(args),
        "stride": encoder.stride, "feature_norm": args.feature_norm,
        "center_kernel": args.center_kernel,
        "tracker": dataclasses.asdict(cfg), "num_sequences": len(sequences),
        "metrics": {**_scores(avg), "fps": float(np.nanmean(list(speeds.values())))},
        "curves": {"precision": avg.precision_curve, "success": avg.success_curve},
        "per_sequence": {name: {**_scores(r), "fps": speeds[name]} for name, r in per_seq.items()},
        "plots": [prec_png.name, succ_png.name], "seconds": time.time() - start,
    }
    write_json(out / "results.json", results)
    print(f"OTB OPE, {len(sequences)} targets, SiamFC on {args.stage} (stride {encoder.stride}):"
          f" precision@20px {avg.precision_score:.3f}  success AUC {avg.success_score:.3f}  "
          f"success rate {avg.success_rate:.3f}  {results['metrics']['fps']:.1f} fps")
    print(f"wrote {out / 'results.json'}, {prec_png.name}, {succ_png.name}")
    return 0
