"""Mutation testing: do the tests notice plausible one-line wiring bugs in ``constcl``?

Usage:
    .venv/bin/python bench/mutation.py [--only ID[,ID...]] [--list] [--dry-run]
                                       [--json OUT] [--write BENCHMARKS.md]
                                       [--timeout SECONDS] [--no-baseline] [--keep]

* ``--only`` selects mutants by id; an id may be a shell-style pattern (``--only 'knn-*'``).
* ``--list`` prints every mutant (id, file, bug, tests) and checks, without running anything,
  that its ``old`` text occurs exactly once in the file and that the mutated file still compiles.
* Each mutant is run in isolation: ``src/`` is copied into a fresh ``tempfile.mkdtemp()`` folder,
  the one-line change is applied there, and ``python -m pytest -x -q -p no:xdist
  -p no:cacheprovider <tests>`` runs from the repository root (so the tests are the repository's)
  with ``PYTHONPATH=<tmp>/src`` first (so ``import constcl`` finds the mutated copy, ahead of the
  editable install's ``.pth`` entry), ``OMP_NUM_THREADS=1`` and a per-mutant timeout.
  A small pytest plugin (``-p _mutation_probe``, written into the temporary folder) checks after
  collection that the tests really imported ``constcl`` from the temporary copy; if not, the run
  stops with an error instead of reporting a meaningless result.
* Result: ``killed`` (a test failed), ``survived`` (all selected tests passed) or ``error``
  (timeout, broken mutant, wrong import, nothing left to run). Kill rate = killed / (killed +
  survived).
* Baseline: first, the union of the selected mutants' tests runs once on an unmutated copy.
  Tests that already fail there are deselected from the mutant runs (and named in the detail
  column), so a test broken by work in progress cannot count as a kill. ``--no-baseline`` skips it.
* ``--dry-run`` copies ``src/`` (applying the ``--only`` mutations, if any), prints the diff line,
  ``constcl.__file__`` as a plain ``python -c`` sees it and as the tests' collection sees it, and
  runs no test.
* ``--json OUT`` writes the results; ``--write FILE.md`` replaces (or appends) the section
  ``## Mutation testing`` of a markdown file with the date, machine and table, keeping its
  hand-written ``### Notes`` sub-section.

Mutants run one after another (the tests pin one thread each); most take 4-14 s, so the whole
list (89 mutants) takes about twelve minutes on two shared cores, the baseline included.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
HEADING = "## Mutation testing"
NOTES = "### Notes"  # kept by --write (write_section)
PROBE_MODULE = "_mutation_probe"
WRONG_IMPORT_RC = 99

# Test groups (pytest node paths relative to the repository root), all fast on one CPU thread.
JOINTS = "tests/models/test_joints.py"
REGION_HEAD = "tests/models/test_region_head.py"
CONSTCL = "tests/models/test_constcl.py"
R3D = "tests/models/test_r3d.py"
NT_XENT = "tests/losses/test_global_nt_xent.py"
REGION_NCE = "tests/losses/test_region_info_nce.py"
OPTIM = "tests/engine/test_schedule_optim.py"
MONITOR_UNIT = ["tests/engine/test_monitor.py::test_parts_cover_every_parameter_once",
                "tests/engine/test_monitor.py::test_ratio_by_hand"]
MONITOR_RUN = "tests/engine/test_monitor.py::test_every_branch_trains_in_a_small_run"
LOOP = "tests/engine/test_loop_joints.py"
SAMPLER_CKPT = "tests/engine/test_sampler_checkpoint.py"
RESUME_SAFETY = "tests/engine/test_resume_safety.py"
EXPORT = "tests/eval/test_export_branches.py"
AUGMENT = "tests/data/test_augment.py"
SAMPLING = "tests/data/test_sampling.py"
REGIONS = "tests/data/test_regions.py"
DATASET = "tests/data/test_dataset.py"
AVA = "tests/eval/test_ava_map.py"
DAVIS = "tests/eval/test_davis.py"
TRACKING = "tests/eval/test_tracking.py"
SIAMFC = "tests/eval/test_siamfc.py"
PROBE_TEST = "tests/eval/test_classify.py::test_linear_probe_separates_a_separable_set"
CLASSIFY_JOINTS = "tests/eval/test_joints_classify.py"
DETECT_JOINTS = "tests/eval/test_joints_detect.py"
TRACK_JOINTS = "tests/eval/test_joints_track.py"
PROPAGATE_JOINTS = "tests/eval/test_joints_propagate.py"
PROPAGATION_UNIT = [f"tests/eval/test_propagate.py::{name}" for name in (
    "test_static_video_keeps_the_first_mask", "test_shifted_pattern_moves_the_mask_along",
    "test_radius_mask_hand_computed", "test_radius_blocks_far_short_term_keys",
    "test_radius_does_not_apply_to_the_first_frame",
    "test_radius_spares_first_frame_keys_next_to_short_term_ones",
    "test_topk_keeps_only_the_best_keys",
    "test_context_queue_indices")]


@dataclass
class Mutant:
    """One plausible one-line bug: ``old`` (exactly once in ``file``) becomes ``new``."""

    id: str
    file: str  # relative to the repository root
    old: str
    new: str
    description: str
    tests: list[str]


@dataclass
class Result:
    id: str
    file: str
    description: str
    status: str  # killed | survived | error
    seconds: float
    detail: str
    tests: list[str]


M = "src/constcl/models/"
L = "src/constcl/losses/"
E = "src/constcl/engine/"
D = "src/constcl/data/"
V = "src/constcl/eval/"

MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------------------ models
    Mutant("model-region-directions-swapped", M + "constcl.py",
           'r = region_info_nce(heads["z_a2b"], heads["z_b2a"], heads["h_a"], heads["h_b"],',
           'r = region_info_nce(heads["z_b2a"], heads["z_a2b"], heads["h_a"], heads["h_b"],',
           "region loss gets z_b2a / z_a2b in swapped directions", [JOINTS]),
    Mutant("model-mask-b-ignored", M + "constcl.py",
           "valid if mask_b is None else mask_b,", "valid,",
           "view b's box mask is replaced by all-valid in the region loss", [JOINTS]),
    Mutant("model-region-temperature", M + "constcl.py",
           "self.losses.region_temperature)", "self.losses.global_temperature)",
           "region InfoNCE uses the global temperature", [JOINTS]),
    Mutant("model-region-weight-dropped", M + "constcl.py",
           'loss = loss + self.losses.region_weight * r["loss"]', 'loss = loss + r["loss"]',
           "region loss added to the total without its weight", [JOINTS]),
    Mutant("model-global-temperature-default", M + "constcl.py",
           "g = global_nt_xent(emb[:batch], emb[batch:], self.losses.global_temperature)",
           "g = global_nt_xent(emb[:batch], emb[batch:])",
           "configured global temperature not passed (loss default 0.1 used)", [JOINTS]),
    Mutant("model-local-views-swapped", M + "constcl.py",
           "heads = self.region_head(local[:batch], local[batch:], boxes_a, boxes_b)",
           "heads = self.region_head(local[batch:], local[:batch], boxes_a, boxes_b)",
           "region head gets view b's map with view a's boxes and vice versa", [JOINTS]),
    Mutant("global-head-max-pool", M + "global_head.py",
           "x = x.mean(dim=(2, 3, 4))", "x = x.amax(dim=(2, 3, 4))",
           "global head max-pools res5 instead of average pooling", [JOINTS, CONSTCL]),
    Mutant("roi-half-shift-dropped", M + "region_head.py",
           "cell_boxes = (boxes.float() * scale + 0.5).reshape(-1, 4)",
           "cell_boxes = (boxes.float() * scale).reshape(-1, 4)",
           "RoI boxes lose the +0.5 that undoes aligned=True (half-cell shift)",
           [REGION_HEAD, JOINTS]),
    Mutant("context-key-off-by-one", M + "region_head.py",
           "key, half = num_frames // 2, context_length // 2",
           "key, half = (num_frames - 1) // 2, context_length // 2",
           "context frames centred on (T'-1)//2 instead of T'//2", [REGION_HEAD, JOINTS]),
    Mutant("region-head-wrong-key-frame", M + "region_head.py",
           "key = fa.shape[2] // 2", "key = fa.shape[2] // 2 - 1",
           "RoI targets pooled on the frame before the key frame", [REGION_HEAD, JOINTS]),
    Mutant("region-head-own-view-context", M + "region_head.py",
           "z_a2b = self.translate(h_a, self.context_tokens(fb), ent_a2b)",
           "z_a2b = self.translate(h_a, self.context_tokens(fa), ent_a2b)",
           "a->b translation attends to view a's own context", [REGION_HEAD, JOINTS]),
    Mutant("decoder-residual-dropped", M + "region_head.py",
           "o = F.scaled_dot_product_attention(q, k, v) + q  # scale 1/sqrt(width)",
           "o = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(width)",
           "decoder unit loses the +q residual before LayerNorm", [REGION_HEAD, JOINTS]),
    Mutant("poscode-not-centred", M + "region_head.py",
           "grid = grid - grid.mean(dim=0, keepdim=True)",
           "grid = grid - grid.amin(dim=0, keepdim=True)",
           "positional code reads 0-based instead of centred coordinates",
           [REGION_HEAD, JOINTS]),
    Mutant("r3d-local-res5-no-stride", M + "r3d.py",
           "return make_stage(c4, spec.widths[3], spec.out_channels[3], spec.depths[3], 2,",
           "return make_stage(c4, spec.widths[3], spec.out_channels[3], spec.depths[3], 1,",
           "the Y-shape's second res5 has no spatial stride", [CONSTCL, EXPORT]),
    Mutant("r3d-shortcut-dropped", M + "r3d.py",
           "return self.relu(out + self.shortcut(x))", "return self.relu(out)",
           "bottleneck forgets its residual shortcut", [R3D]),
    # ------------------------------------------------------------------------------ losses
    Mutant("nt-xent-self-unmasked", L + "global_nt_xent.py",
           'logits_aa = (a @ a_all.T / temperature).masked_fill(self_mask, float("-inf"))',
           "logits_aa = a @ a_all.T / temperature",
           "NT-Xent keeps each anchor's similarity with itself among the negatives", [NT_XENT]),
    Mutant("nt-xent-temperature-missing", L + "global_nt_xent.py",
           "logits_ab = a @ b_all.T / temperature", "logits_ab = a @ b_all.T",
           "a->b logits (the positives) not divided by the temperature", [NT_XENT]),
    Mutant("region-match-mask-ignored", L + "region_info_nce.py",
           'idx_a2b = sim.masked_fill(~mask_b[:, None, :], float("-inf")).argmax(dim=2)',
           "idx_a2b = sim.argmax(dim=2)",
           "a->b box matching may pick an invalid (padded) box of view b", [REGION_NCE]),
    Mutant("region-negatives-unmasked", L + "region_info_nce.py",
           "neg_valid = (other_video[:, :, None] & target_valid_all[None]).unsqueeze(1)",
           "neg_valid = (other_video[:, :, None] & torch.ones_like(target_valid_all)[None])"
           ".unsqueeze(1)",
           "padded boxes of other videos count as negatives", [REGION_NCE]),
    Mutant("region-query-needs-no-partner", L + "region_info_nce.py",
           "query_a = mask_a & mask_b.any(dim=1, keepdim=True)", "query_a = mask_a",
           "a->b queries count even when view b has no valid box", [REGION_NCE]),
    Mutant("region-normaliser-all-queries", L + "region_info_nce.py",
           "global_count = dist.all_reduce_sum_no_grad(qv.sum()).clamp(min=1.0)",
           "global_count = float(qv.numel())",
           "region loss averaged over all K slots instead of the valid queries", [REGION_NCE]),
    # ------------------------------------------------------------------------------ engine
    Mutant("trainstep-lr-scale-ignored", E + "step.py",
           'group["lr"] = lr * group.get("lr_scale", 1.0)', 'group["lr"] = lr',
           "TrainStep sets every group to the schedule lr, dropping lr_scale", [OPTIM, LOOP]),
    Mutant("optim-decay-on-bn", E + "optim.py",
           'is_weight = name == "weight" and isinstance(module, nn.Linear | nn.Conv3d | nn.Conv2d)',
           'is_weight = name == "weight"',
           "weight decay also applied to BatchNorm gammas", [OPTIM]),
    Mutant("optim-region-groups-wrong-modules", E + "optim.py",
           'return [m for m in (getattr(model, "res5_local", None), '
           'getattr(model, "region_head", None))',
           'return [m for m in (getattr(model, "res5_local", None), '
           'getattr(model, "global_head", None))',
           "region-only groups built from the global head instead of the region head", [OPTIM]),
    Mutant("optim-region-decay-not-divided", E + "optim.py",
           '"weight_decay": weight_decay / scale if decay else 0.0,',
           '"weight_decay": weight_decay if decay else 0.0,',
           "region-only decay not divided by lr_scale (1000x stronger decay)", [OPTIM]),
    Mutant("optim-lars-scale-all", E + "optim.py",
           'proportional = optimizer == "sgd" or lars_exclude', "proportional = True",
           "LARS trust-ratio groups also get the local lr scale", [OPTIM]),
    Mutant("warmup-off-by-one", "src/constcl/schedule.py",
           "warm = peak * np.arange(1, warmup_steps + 1) / max(warmup_steps, 1)",
           "warm = peak * np.arange(warmup_steps) / max(warmup_steps, 1)",
           "warm-up starts at 0 and never reaches the peak", [OPTIM, LOOP]),
    Mutant("cosine-ends-at-peak", "src/constcl/schedule.py",
           "cosine = final + 0.5 * (peak - final) * (1 + np.cos(math.pi * t))",
           "cosine = final + 0.5 * (peak - final) * (1 + np.cos(2 * math.pi * t))",
           "full cosine period: the schedule returns to the peak at the end", [OPTIM, LOOP]),
    Mutant("monitor-norm-after-update", E + "monitor.py",
           "norm = torch.sqrt(sum((o.float() ** 2).sum() for o in old))",
           "norm = torch.sqrt(sum((p.float() ** 2).sum() for p in params))",
           "update ratio divides by the weights after the step, not before", MONITOR_UNIT),
    Mutant("pretrain-auto-scale-off", E + "setup.py",
           "local_scale = cfg.optim.local_lr_scale or auto_local_lr_scale(cfg.loss.region_weight)",
           "local_scale = cfg.optim.local_lr_scale or 1.0",
           "pretrain ignores the automatic 1/region_weight local lr scale", [MONITOR_RUN, LOOP]),
    Mutant("checkpoint-prunes-newest", E + "checkpoint.py",
           "for old in list_checkpoints(run_dir)[:-keep]:",
           "for old in list_checkpoints(run_dir)[keep:]:",
           "checkpoint pruning deletes the newest instead of the oldest", [SAMPLER_CKPT]),
    Mutant("checkpoint-resume-oldest", E + "checkpoint.py",
           "for path in reversed(list_checkpoints(run_dir)):",
           "for path in list_checkpoints(run_dir):",
           "resume picks the oldest loadable checkpoint", [SAMPLER_CKPT]),
    Mutant("resume-shape-fields-free", "src/constcl/config.py",
           "    if key in RESUME_SHAPE:", "    if key in ():",
           "a resume may change model shape fields (with permission)", [RESUME_SAFETY]),
    Mutant("resume-allow-list-ignored", E + "resume.py",
           'refused = {k: v for k, v in run.items() if "all" not in allowed and k not in allowed}',
           'refused = {k: v for k, v in run.items() if "all" not in allowed}',
           "train.resume_allow_changes accepts only 'all', not a list of fields",
           [RESUME_SAFETY]),
    Mutant("resume-metrics-keep-later-steps", E + "resume.py",
           "if record_step <= step:", "if record_step <= step + 1:",
           "metrics.jsonl keeps the line after the resumed step", [RESUME_SAFETY]),
    Mutant("resume-optimizer-old-hparams", E + "setup.py",
           "        group.update(values)", "        group.update({})",
           "a resumed optimiser keeps the checkpoint's momentum / weight decay / lr scale",
           [RESUME_SAFETY]),
    Mutant("weights-check-off", E + "loop.py",
           "    if bool(finite.all()):", "    if True:",
           "NaN / Inf weights are not detected", [RESUME_SAFETY]),
    Mutant("config-accepts-inf", "src/constcl/config.py",
           "if isinstance(value, float) and not math.isfinite(value):",
           "if isinstance(value, float) and math.isnan(value):",
           "validation lets inf through (e.g. optim.base_lr=inf)", [RESUME_SAFETY]),
    Mutant("detections-without-boxes-accepted", E + "data.py",
           "    if with_boxes == 0:", "    if with_boxes < 0:",
           "detections with no box file at all only warn", [RESUME_SAFETY]),
    Mutant("sampler-rank-slice", E + "sampler.py",
           "start = base + (m * self.world + self.rank) * self.batch",
           "start = base + (m + self.rank) * self.batch",
           "micro-batch slices overlap across ranks / accumulation steps", [SAMPLER_CKPT]),
    Mutant("sampler-same-order-every-epoch", E + "sampler.py",
           "gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)",
           "gen = torch.Generator().manual_seed(self.seed * 1_000_003)",
           "every epoch uses the same permutation", [SAMPLER_CKPT]),
    Mutant("export-swaps-res5-copies", "src/constcl/backbone_file.py",
           'tensors[f"{RES5_LOCAL}{name}"] = value', 'tensors[f"{RES5_GLOBAL}{name}"] = value',
           "export writes the local res5 copy over the global one", [EXPORT]),
    # ------------------------------------------------------------------------------ data
    Mutant("boxes-flip-not-applied", D + "augment.py",
           "x = 1.0 - x[:, ::-1]", "x = x  # flip not applied",
           "horizontal flip not applied to the boxes", [AUGMENT, REGIONS]),
    Mutant("boxes-crop-offset-sign", D + "augment.py",
           "x = (boxes[:, [0, 2]] * p.frame_width - p.left) / p.width",
           "x = (boxes[:, [0, 2]] * p.frame_width + p.left) / p.width",
           "crop's left offset added instead of subtracted", [AUGMENT, REGIONS]),
    Mutant("boxes-visible-fraction-of-itself", D + "augment.py",
           "valid &= width * height >= min_visible * np.maximum(area, 1e-12)",
           "valid &= width * height >= min_visible * np.maximum(width * height, 1e-12)",
           "visibility compares the clipped box with itself (min_visible has no effect)",
           [AUGMENT, REGIONS]),
    Mutant("sampling-key-frame-off-by-one", D + "sampling.py",
           "return self.frames // 2", "return (self.frames - 1) // 2",
           "key frame is frame 7 of 16 instead of 8", [SAMPLING]),
    Mutant("sampling-gap-density-reversed", D + "sampling.py",
           "return float(max_gap * (1.0 - math.sqrt(rng.random())))",
           "return float(max_gap * math.sqrt(rng.random()))",
           "gap density increases with the gap instead of decreasing", [SAMPLING]),
    Mutant("sampling-views-never-swapped", D + "sampling.py",
           "if rng.random() < 0.5:", "if rng.random() < 0.0:",
           "view a always starts first (no random swap)", [SAMPLING]),
    Mutant("regions-first-annotated-frame", D + "regions.py",
           "nearest = min(boxes_by_frame, key=lambda k: (abs(k - key_frame), k))",
           "nearest = min(boxes_by_frame)",
           "detection boxes taken from the first annotated frame, not the nearest",
           [REGIONS]),
    Mutant("regions-worst-score-first", D + "regions.py",
           'rows = rows[np.argsort(-rows[:, 4], kind="stable")]',
           'rows = rows[np.argsort(rows[:, 4], kind="stable")]',
           "detections kept in ascending score order", [REGIONS]),
    Mutant("regions-random-diagonal", D + "regions.py",
           "x1, y1 = rng.uniform(0, 1, num), rng.uniform(0, 1, num)",
           "x1 = y1 = rng.uniform(0, 1, num)",
           "random boxes with x1 == y1 (the reference code's bug)", [REGIONS]),
    Mutant("dataset-regions-at-first-frame", D + "dataset.py",
           "boxes, mask = self._regions(item, frames[key], int(indices[key]), params, rng)",
           "boxes, mask = self._regions(item, frames[0], int(indices[0]), params, rng)",
           "region boxes computed on the clip's first frame, not its key frame", [DATASET]),
    # ------------------------------------------------------------------------------ eval
    Mutant("loader-ignores-branch", V + "encoder.py",
           'res5 = parts.res5_local if branch == "local" else parts.res5_global',
           'res5 = parts.res5_global',
           "load_backbone returns the global res5 for branch='local'", [EXPORT]),
    Mutant("ava-ap-no-envelope", V + "metrics/ava_map.py",
           "p = np.maximum.accumulate(p[::-1])[::-1]", "# (precision envelope dropped)",
           "AP without the all-point interpolation (no precision envelope)", [AVA]),
    Mutant("ava-iou-threshold-exclusive", V + "metrics/ava_map.py",
           "eligible = np.flatnonzero(iou[np.arange(n), best] >= iou_threshold)",
           "eligible = np.flatnonzero(iou[np.arange(n), best] > iou_threshold)",
           "IoU exactly at the threshold no longer matches", [AVA]),
    Mutant("ava-iou-threshold-0.4", V + "metrics/ava_map.py",
           "iou_threshold: float = 0.5,", "iou_threshold: float = 0.4,",
           "frame-mAP default IoU threshold 0.4 instead of 0.5", [AVA]),
    Mutant("davis-keeps-last-frame", V + "metrics/davis.py",
           "gt, pred, void = gt[1:-1], pred[1:-1], void[1:-1]",
           "gt, pred, void = gt[1:], pred[1:], void[1:]",
           "DAVIS scoring keeps the last frame", [DAVIS]),
    Mutant("davis-radius-truncated", V + "metrics/davis.py",
           "return int(np.ceil(bound_th * np.linalg.norm(shape[-2:])))",
           "return int(bound_th * np.linalg.norm(shape[-2:]))",
           "boundary radius truncated instead of rounded up", [DAVIS]),
    Mutant("otb-success-inclusive", V + "metrics/tracking.py",
           "succ = np.mean(ious[:, None] > SUCCESS_THRESHOLDS[None, :], axis=0)",
           "succ = np.mean(ious[:, None] >= SUCCESS_THRESHOLDS[None, :], axis=0)",
           "success curve counts IoU == threshold (perfect tracker scores 1)", [TRACKING]),
    Mutant("propagation-queue-includes-target", V + "propagate/algorithm.py",
           "return [max(s, 0) for s in range(t - context, t)]",
           "return [max(s, 0) for s in range(t - context + 1, t + 1)]",
           "short-term queue shifted by one: holds the (unlabelled) target frame",
           PROPAGATION_UNIT),
    Mutant("propagation-radius-on-first-frame", V + "propagate/algorithm.py",
           "aff[:, num_first:] += far[:, None].to(aff.dtype) * MASKED",
           "aff += far[:, None].to(aff.dtype) * MASKED",
           "radius restriction also applied to the first-frame keys", PROPAGATION_UNIT),
    Mutant("propagation-temperature-dropped", V + "propagate/algorithm.py",
           "aff = aff.reshape(-1, m * n) / cfg.temperature", "aff = aff.reshape(-1, m * n)",
           "affinities not divided by the temperature", PROPAGATION_UNIT),
    Mutant("siamfc-crop-offset-sign", V + "track/siamfc.py",
           "y0, x0 = (int(v) for v in np.round(np.asarray(center) - (side - 1) / 2))",
           "y0, x0 = (int(v) for v in np.round(np.asarray(center) + (side - 1) / 2))",
           "SiamFC crop corner on the wrong side of the centre", [SIAMFC]),
    Mutant("siamfc-half-cell-dropped", V + "track/siamfc.py",
           "cell = (loc + 0.5) / self.cfg.response_up - 0.5",
           "cell = loc / self.cfg.response_up",
           "upsampled response position without the half-pixel centre shift", [SIAMFC]),
    # ------------------------------------------------------------------ evaluation joints
    # One-line wiring bugs between the features and the reported number (issue 27): which
    # labels a classifier trains on, which split is encoded, bank vs query, normalisation, box
    # coordinates, frame indices. The tests/eval/test_joints_*.py tests recompute each task's
    # metric from known features with an independent implementation of the protocol.
    Mutant("classify-probe-labels-of-test-videos", V + "classify/task.py",
           'view_labels = y_train[train["video_index"]]',
           'view_labels = y_test[train["video_index"]]',
           "linear probe trains on the labels of the test videos at the same positions",
           [CLASSIFY_JOINTS]),
    Mutant("classify-probe-trained-on-test", V + "classify/task.py",
           "probe, history = fit_linear_probe(x_train, view_labels, len(splits.classes), cfg, "
           "evaluate)",
           'probe, history = fit_linear_probe(test["values"], y_test[test["video_index"]], '
           "len(splits.classes), cfg, evaluate)",
           "linear probe trains on the test features and labels (a leak)", [CLASSIFY_JOINTS]),
    Mutant("classify-scored-against-train-labels", V + "classify/task.py",
           'acc, scores, y = video_accuracy(logits, test["video_index"], y_test)',
           'acc, scores, y = video_accuracy(logits, test["video_index"], y_train)',
           "linear probe's test predictions scored against the training labels",
           [CLASSIFY_JOINTS]),
    Mutant("classify-splits-swapped", V + "classify/task.py",
           'items = splits.train if which == "train" else splits.test',
           'items = splits.train if which == "test" else splits.test',
           "frozen_features encodes the test videos as 'train' and vice versa",
           [CLASSIFY_JOINTS]),
    Mutant("knn-bank-and-query-swapped", V + "classify/task.py",
           'recall = retrieval_hit_rate(*per_video["test"], *per_video["train"], ks=(1, 5, 10))',
           'recall = retrieval_hit_rate(*per_video["train"], *per_video["test"], ks=(1, 5, 10))',
           "kNN: training videos query the test videos", [CLASSIFY_JOINTS]),
    Mutant("knn-normalised-per-dimension", V + "classify/task.py",
           'v = enc["values"] / np.maximum(np.linalg.norm(enc["values"], axis=1, keepdims=True),',
           'v = enc["values"] / np.maximum(np.linalg.norm(enc["values"], axis=0, keepdims=True),',
           "kNN: views normalised per feature dimension instead of per view",
           [CLASSIFY_JOINTS]),
    Mutant("knn-labels-not-reindexed", V + "classify/task.py",
           "_labels(splits, name)[present])", "_labels(splits, name)[: len(present)])",
           "kNN: labels not re-indexed after an undecodable video", [CLASSIFY_JOINTS]),
    Mutant("feature-cache-index-skips-failed", V + "feature_cache.py",
           "np.full(len(rows[i]), i) for i in order]",
           "np.full(len(rows[i]), j) for j, i in enumerate(order)]",
           "encoded views numbered by position, not video index (shifts after a failed video)",
           [CLASSIFY_JOINTS]),
    Mutant("finetune-labels-of-test-videos", V + "classify/finetune.py",
           "[int(i.label) for i in splits.train]", "[int(i.label) for i in splits.test]",
           "fine-tuning trains on the labels of the test videos at the same positions",
           [CLASSIFY_JOINTS]),
    Mutant("finetune-tests-on-train-videos", V + "classify/finetune.py",
           "test_paths = [str(i.path) for i in splits.test]",
           "test_paths = [str(i.path) for i in splits.train]",
           "fine-tuning is tested on the training videos", [CLASSIFY_JOINTS]),
    Mutant("detect-box-width-height-swapped", V + "detect/task.py",
           "h, w = x.shape[-2:]", "w, h = x.shape[-2:]",
           "RoI boxes scaled by the frame's height in x and its width in y", [DETECT_JOINTS]),
    Mutant("detect-trained-on-val", V + "detect/task.py",
           "train = ava.groundtruth_key_frames(ava.read_groundtruth(files.train, fixes), "
           "class_ids)",
           "train = ava.groundtruth_key_frames(ava.read_groundtruth(files.val, fixes), "
           "class_ids)",
           "RoI classifier trains on the validation boxes and labels (a leak)", [DETECT_JOINTS]),
    Mutant("detect-val-features-of-train-boxes", V + "detect/task.py",
           'f_val, hit_val = _features(settings, files, val_boxes, f"val-{settings.boxes}", '
           'val_sources)',
           'f_val, hit_val = _features(settings, files, train, f"val-{settings.boxes}", '
           'val_sources)',
           "validation scores computed on the training boxes' features", [DETECT_JOINTS]),
    Mutant("roi-spatial-scale-16", V + "detect/roi.py",
           "spatial_scale: float = 1.0 / RES5_STRIDE,", "spatial_scale: float = 1.0 / 16,",
           "RoIAlign at PySlowFast's 1/16 on our stride-32 res5", [DETECT_JOINTS]),
    Mutant("key-frame-not-centred", V + "views.py",
           "return clamped_clip_indices(key_frame - stride * (frames // 2), frames, stride,",
           "return clamped_clip_indices(key_frame - stride * ((frames - 1) // 2), frames, "
           "stride,",
           "detection clip's input frame (frames - 1) // 2 is the key frame, not frames // 2",
           [DETECT_JOINTS]),
    Mutant("track-starts-from-second-box", V + "track/task.py",
           "pred, times = tracker_factory().track(seq.frames, seq.boxes[0])",
           "pred, times = tracker_factory().track(seq.frames, seq.boxes[1])",
           "tracker initialised with the second frame's box on the first frame", [TRACK_JOINTS]),
    Mutant("track-scored-against-first-sequence", V + "track/task.py",
           "per_seq, avg = evaluate_ope(boxes, {s.name: s.boxes for s in sequences})",
           "per_seq, avg = evaluate_ope(boxes, {s.name: sequences[0].boxes for s in sequences})",
           "every sequence scored against the first sequence's ground truth", [TRACK_JOINTS]),
    Mutant("siamfc-init-centre-xy-swapped", V + "track/siamfc.py",
           "self.center = np.array([y - 1 + (h - 1) / 2, x - 1 + (w - 1) / 2])",
           "self.center = np.array([x - 1 + (w - 1) / 2, y - 1 + (h - 1) / 2])",
           "SiamFC state starts at (x, y) where it keeps (row, column)", [TRACK_JOINTS]),
    Mutant("siamfc-target-size-swapped", V + "track/siamfc.py",
           "self.target_sz = np.array([h, w])", "self.target_sz = np.array([w, h])",
           "SiamFC target size kept as (w, h) where it reads (h, w)", [TRACK_JOINTS]),
    Mutant("siamfc-box-zero-based", V + "track/siamfc.py",
           "return np.array([cx + 1 - (w - 1) / 2, cy + 1 - (h - 1) / 2, w, h])",
           "return np.array([cx - (w - 1) / 2, cy - (h - 1) / 2, w, h])",
           "tracked boxes written 0-based where OTB is 1-based", [TRACK_JOINTS]),
    Mutant("propagate-first-mask-from-frame-1", V + "propagate/task.py",
           "first = first_frame_onehot(gt[0], tuple(f.shape[-2:])).to(device)",
           "first = first_frame_onehot(gt[1], tuple(f.shape[-2:])).to(device)",
           "propagation starts from frame 1's annotation on frame 0's features",
           [PROPAGATE_JOINTS]),
    Mutant("propagate-frames-transposed", V + "propagate/task.py",
           "x = to_model_range(x.permute(0, 3, 1, 2).contiguous())",
           "x = to_model_range(x.permute(0, 3, 2, 1).contiguous())",
           "DAVIS frames enter the encoder with height and width exchanged", [PROPAGATE_JOINTS]),
    Mutant("propagation-query-previous-frame", V + "propagate/algorithm.py",
           "labels[t] = propagate_frame(feats[t], feats[idx], labels[idx], 1, positions, cfg)",
           "labels[t] = propagate_frame(feats[t - 1], feats[idx], labels[idx], 1, positions, "
           "cfg)",
           "frame t's labels propagated from frame t - 1's features (the masks lag a frame)",
           [PROPAGATE_JOINTS]),
    Mutant("cache-identity-ignores-branch", V + "encoder.py",
           '            "branch": choice.branch}', "            }",
           "a checkpoint's feature-cache key leaves out the branch (local reads global's cache)",
           [CLASSIFY_JOINTS]),
    # An equivalent mutant: the probe's bias absorbs the mean (W (x - m) / s + b = W x / s + b'),
    # so the functions the probe can represent are the same; only the conditioning changes.
    Mutant("probe-not-centred", V + "probe.py",
           "return self.linear((x - self.mean) / self.std)",
           "return self.linear(x / self.std)",
           "linear probe scales the features but forgets to subtract the mean", [PROBE_TEST]),
]

PROBE_SOURCE = f'''"""Written by bench/mutation.py: which constcl did the collected tests import?"""

import os
import sys

import pytest


def pytest_collection_finish(session):
    module = sys.modules.get("constcl")
    path = os.path.realpath(getattr(module, "__file__", None) or "") if module else ""
    expected = os.path.realpath(os.environ["MUTATION_SRC"])
    with open(os.environ["MUTATION_PROBE_OUT"], "w") as f:
        f.write(path)
    if not path.startswith(expected + os.sep):
        pytest.exit(f"tests imported constcl from {{path or 'nowhere'}}, not from {{expected}}",
                    returncode={WRONG_IMPORT_RC})
'''


# ---------------------------------------------------------------------------- mutants


def check_mutant(m: Mutant, root: Path = REPO) -> str | None:
    """Why the mutant cannot be applied to the repository as it is now, or None if it can."""
    path = root / m.file
    if not path.is_file():
        return f"{m.file} does not exist"
    if "\n" in m.old or "\n" in m.new:
        return "old / new must be one line"
    if m.old == m.new:
        return "old and new are identical"
    text = path.read_text()
    count = text.count(m.old)
    if count != 1:
        return f"old text occurs {count} times in {m.file} (must be exactly once)"
    try:
        compile(text.replace(m.old, m.new), str(path), "exec")
    except SyntaxError as err:
        return f"mutated file does not compile: {err}"
    if not m.tests:
        return "no tests given"
    return None


def mutated_line(m: Mutant, root: Path = REPO) -> tuple[int, str, str]:
    """(line number, original line, mutated line) of an applicable mutant."""
    text = (root / m.file).read_text()
    lineno = text[: text.index(m.old)].count("\n") + 1
    line = text.splitlines()[lineno - 1]
    return lineno, line, line.replace(m.old, m.new)


def make_copy(mutant: Mutant | None) -> Path:
    """A temporary folder with ``src/`` (mutated if given) and the import-check plugin."""
    tmp = Path(tempfile.mkdtemp(prefix="constcl-mutant-"))
    shutil.copytree(SRC, tmp / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    if mutant is not None:
        target = tmp / mutant.file
        text = target.read_text()
        target.write_text(text.replace(mutant.old, mutant.new, 1))
    (tmp / "probe").mkdir()
    (tmp / "probe" / f"{PROBE_MODULE}.py").write_text(PROBE_SOURCE)
    return tmp


def test_env(tmp: Path) -> dict[str, str]:
    """Environment of a test run: the copy first on PYTHONPATH, one thread, import probe."""
    env = dict(os.environ)
    paths = [str(tmp / "src"), str(tmp / "probe")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env.update(PYTHONPATH=os.pathsep.join(paths), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1", MUTATION_SRC=str(tmp / "src"),
               MUTATION_PROBE_OUT=str(tmp / "probe.txt"))
    return env


def run_command(cmd: list[str], env: dict[str, str], timeout: float
                ) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, combined output, seconds); on timeout the whole process
    group started here is killed."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    return rc, out or "", time.perf_counter() - start


def pytest_command(tests: list[str], deselect: list[str], stop_first: bool = True,
                   collect_only: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
           "-p", PROBE_MODULE]
    if stop_first:
        cmd.append("-x")
    if collect_only:
        cmd.append("--collect-only")
    for node in deselect:
        cmd += ["--deselect", node]
    return cmd + list(tests)


def failed_nodes(output: str) -> list[str]:
    """Node ids on the ``FAILED`` / ``ERROR`` lines of pytest's short summary."""
    nodes = []
    for line in output.splitlines():
        match = re.match(r"^(?:FAILED|ERROR) (\S+)", line)
        if match and match.group(1) not in nodes:
            nodes.append(match.group(1))
    return nodes


def covers(spec: str, node: str) -> bool:
    """Whether the test spec (file, file::test or file::test[param]) selects ``node``."""
    return node == spec or node.startswith(spec + "::") or node.startswith(spec + "[")


def probe_path(tmp: Path) -> str:
    path = tmp / "probe.txt"
    return path.read_text() if path.is_file() else ""


def tail(output: str, lines: int = 15) -> str:
    return "\n".join(output.rstrip().splitlines()[-lines:])


# ---------------------------------------------------------------------------- runs


def run_baseline(mutants: list[Mutant], timeout: float, keep: bool) -> list[str]:
    """Run the union of the mutants' tests on an unmutated copy; returns the failing nodes."""
    tests: list[str] = []
    for m in mutants:
        tests += [t for t in m.tests if t not in tests]
    tmp = make_copy(None)
    try:
        rc, out, secs = run_command(pytest_command(tests, [], stop_first=False),
                                    test_env(tmp), timeout * max(1, len(tests)))
        imported = probe_path(tmp)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if rc == WRONG_IMPORT_RC:
        sys.exit(f"baseline: the tests did not import the copied package ({imported}); "
                 "check PYTHONPATH handling\n" + tail(out))
    if rc is None:
        sys.exit(f"baseline: timed out after {secs:.0f} s")
    failing = failed_nodes(out)
    print(f"baseline ({len(tests)} test paths, constcl from the copy: {imported}): "
          f"{'all pass' if rc == 0 else f'{len(failing)} failing'} in {secs:.1f} s", flush=True)
    if rc not in (0, 1) or (rc == 1 and not failing):
        sys.exit(f"baseline: pytest exit code {rc}\n" + tail(out))
    for node in failing:
        print(f"  fails without any mutation (deselected for mutants): {node}", flush=True)
    return failing


def run_mutant(m: Mutant, timeout: float, baseline_failures: list[str], keep: bool) -> Result:
    def result(status: str, seconds: float, detail: str) -> Result:
        return Result(m.id, m.file, m.description, status, round(seconds, 1), detail, m.tests)

    problem = check_mutant(m)
    if problem is not None:
        return result("error", 0.0, f"broken mutant: {problem}")
    deselect = [n for n in baseline_failures if any(covers(t, n) for t in m.tests)]
    note = f" (baseline failures deselected: {', '.join(deselect)})" if deselect else ""
    tmp = make_copy(m)
    try:
        rc, out, secs = run_command(pytest_command(m.tests, deselect), test_env(tmp), timeout)
        imported = probe_path(tmp)
    finally:
        if keep:
            print(f"  kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if rc is None:
        return result("error", secs, f"timeout after {timeout:.0f} s{note}")
    if rc == WRONG_IMPORT_RC:
        return result("error", secs, f"tests imported constcl from {imported or 'nowhere'}")
    if rc == 0:
        return result("survived", secs, "all selected tests pass" + note)
    if rc == 1:
        failing = failed_nodes(out)
        return result("killed", secs, (failing[0] if failing else "a test failed") + note)
    if rc == 2:  # interrupted: the mutated package broke test collection
        return result("killed", secs, "collection error: " + tail(out, 3).replace("\n", " | "))
    if rc == 5:
        return result("error", secs, "no tests collected" + note)
    return result("error", secs, f"pytest exit code {rc}: " + tail(out, 3).replace("\n", " | "))


def dry_run(mutants: list[Mutant]) -> None:
    """Show the mutation and where constcl is imported from, without running tests."""
    for m in mutants or [None]:
        if m is not None:
            problem = check_mutant(m)
            if problem is not None:
                print(f"{m.id}: broken mutant: {problem}")
                continue
            lineno, before, after = mutated_line(m)
            print(f"{m.id}: {m.file}:{lineno}\n  - {before.strip()}\n  + {after.strip()}")
        tests = m.tests if m is not None else [SAMPLING]
        tmp = make_copy(m)
        try:
            env = test_env(tmp)
            rc, out, _ = run_command([sys.executable, "-c",
                                      "import constcl; print(constcl.__file__)"], env, 120)
            print(f"  python -c 'import constcl': {out.strip()}")
            rc, out, _ = run_command(pytest_command(tests, [], collect_only=True), env, 300)
            imported = probe_path(tmp)
            ok = rc in (0, 1, 2, 5) and imported.startswith(os.path.realpath(tmp / "src"))
            print(f"  pytest --collect-only {' '.join(tests)}: constcl from {imported or '?'} "
                  f"-> {'mutated copy' if m else 'copy'} {'OK' if ok else 'NOT USED'}")
            if rc not in (0, 5):
                print(tail(out, 5))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- reports


def short_file(path: str) -> str:
    return path.removeprefix("src/constcl/")


def kill_rate(results: list[Result]) -> tuple[int, int, int]:
    killed = sum(r.status == "killed" for r in results)
    survived = sum(r.status == "survived" for r in results)
    return killed, survived, len(results) - killed - survived


def rate_line(results: list[Result]) -> str:
    killed, survived, errors = kill_rate(results)
    scored = killed + survived
    rate = f"{100 * killed / scored:.0f} %" if scored else "n/a"
    return (f"kill rate {killed}/{scored} = {rate} ({survived} survived, {errors} errors, "
            f"{len(results)} mutants)")


def print_table(results: list[Result]) -> None:
    rows = [("id", "file", "description", "result", "s", "detail")]
    rows += [(r.id, short_file(r.file), r.description, r.status, f"{r.seconds:.1f}", r.detail)
             for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True))
              + "  " + row[5])
    print(rate_line(results))


def machine() -> str:
    cores = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    return (f"{platform.system()} {platform.machine()}, {usable} usable of {cores} CPU cores, "
            f"Python {platform.python_version()}")


def markdown_section(results: list[Result], command: str, total: int) -> str:
    date = datetime.date.today().isoformat()
    subset = "" if len(results) == total else f" (a subset: {len(results)} of {total} mutants)"
    lines = [
        HEADING,
        "",
        f"`{command}` on {date}; {machine()}{subset}.",
        "",
        "Each mutant changes one line in a temporary copy of `src/`; the listed tests run from "
        "the repository with `PYTHONPATH=<copy>/src` first and `OMP_NUM_THREADS=1` (a pytest "
        "plugin checks that they imported the copy). killed = a test failed; survived = all "
        "passed; error = timeout or a mutant that no longer applies. Tests that already fail "
        "without a mutation are deselected.",
        "",
        "| id | file | bug | result | s | detail |",
        "|---|---|---|---|---:|---|",
    ]
    for r in results:
        detail = r.detail.replace("|", "\\|")
        lines.append(f"| `{r.id}` | {short_file(r.file)} | {r.description} | {r.status} | "
                     f"{r.seconds:.1f} | {detail} |")
    rate = rate_line(results)
    lines += ["", rate[0].upper() + rate[1:] + ".", ""]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace the ``## Mutation testing`` section of ``path`` (up to the next ``## ``), or
    append it. Its hand-written ``### Notes`` sub-section (from that heading to the section's
    end) is kept, after the new table: a run replaces its measurement, not what people wrote
    about earlier runs."""
    lines = path.read_text().splitlines() if path.is_file() else []
    start = next((i for i, line in enumerate(lines) if line.strip() == HEADING), None)
    new = section.rstrip("\n").splitlines()
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ([""] if lines else []) + new
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        notes = next((i for i in range(start + 1, end) if lines[i].strip() == NOTES), None)
        kept = lines[notes:end] if notes is not None else []
        while kept and not kept[-1].strip():
            kept.pop()
        lines[start:end] = new + ([""] + kept if kept else []) + ([""] if end < len(lines) else [])
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------- command


def select(only: str | None) -> list[Mutant]:
    ids = [m.id for m in MUTANTS]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        sys.exit(f"duplicate mutant ids: {sorted(duplicates)}")
    if not only:
        return list(MUTANTS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if not fnmatch.filter(ids, w)]
    if unknown:
        sys.exit(f"no mutant id matches {unknown}; see --list")
    return [m for m in MUTANTS if any(fnmatch.fnmatchcase(m.id, w) for w in wanted)]


def list_mutants(mutants: list[Mutant]) -> int:
    broken = 0
    for m in mutants:
        problem = check_mutant(m)
        broken += problem is not None
        status = "ok" if problem is None else f"BROKEN: {problem}"
        print(f"{m.id}  [{short_file(m.file)}]  {status}\n    {m.description}\n"
              f"    tests: {' '.join(m.tests)}")
    print(f"{len(mutants)} mutants, {broken} broken")
    return 1 if broken else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", metavar="ID[,ID...]",
                        help="run only these mutants; an ID may be a shell-style pattern "
                             "('knn-*,*-joints')")
    parser.add_argument("--list", action="store_true", help="list and check the mutants, run none")
    parser.add_argument("--dry-run", action="store_true",
                        help="show each mutation and where the tests import constcl from")
    parser.add_argument("--json", metavar="OUT", type=Path, help="write the results as JSON")
    parser.add_argument("--write", metavar="FILE.md", type=Path,
                        help="replace or append the '## Mutation testing' section of FILE.md")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds per mutant (default 300)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the unmutated run of the selected tests")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    args = parser.parse_args(argv)
    mutants = select(args.only)
    if args.list:
        return list_mutants(mutants)
    if args.dry_run:
        dry_run(mutants if args.only else [])
        return 0

    applicable = [m for m in mutants if check_mutant(m) is None]
    failures = [] if args.no_baseline or not applicable else run_baseline(
        applicable, args.timeout, args.keep)
    results = []
    for i, m in enumerate(mutants, 1):
        print(f"[{i}/{len(mutants)}] {m.id} ...", end=" ", flush=True)
        r = run_mutant(m, args.timeout, failures, args.keep)
        print(f"{r.status} ({r.seconds:.1f} s) {r.detail}", flush=True)
        results.append(r)
    print()
    print_table(results)

    command = "python bench/mutation.py" + (f" --only {args.only}" if args.only else "")
    if args.json:
        killed, survived, errors = kill_rate(results)
        args.json.write_text(json.dumps({
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(), "command": command, "baseline_failures": failures,
            "killed": killed, "survived": survived, "errors": errors,
            "results": [asdict(r) for r in results]}, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.write:
        write_section(args.write, markdown_section(results, command, len(MUTANTS)))
        print(f"wrote the '{HEADING}' section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
