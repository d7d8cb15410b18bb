"""Random init vs CVRL vs region vs ConST-CL on the synthetic world, over seeds.

``constcl bench`` runs :func:`run_bench`. It drives the library end to end (``pretrain`` and
``constcl.eval.<task>.run``), so it lives beside ``engine`` and ``eval`` rather than inside
either. For every training seed and every variant (``cvrl`` and ``constcl`` by default;
``region``, the ablation without context, on request), pretrain with the same budget on the
synthetic world, add the random-init network drawn with the same seed, evaluate every encoder
on both res5 branches (where it has two) with all four tasks plus kNN retrieval, and write:

* ``RESULTS.md``: mean +- standard deviation over seeds of each headline number, labelled with
  the budget, the command line, the machine and the date, then every seed's numbers;
* ``results.json``: the same numbers, machine-readable;
* ``report.html``: a page with the comparison charts, curves and panels (``constcl.report``).

The world has its own seed (``world_seed``), independent of the training seeds, so seeds
measure training noise on one fixed world. From Python::

    from constcl.benchmark import Budget, run_bench
    run_bench(Budget(steps=50, videos=48, seeds=(0, 1)), "bench_out")
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from constcl.config import load_config
from constcl.data.synth import generate_world, split_videos
from constcl.data.synth.local_sets import generate_local_sets
from constcl.engine.presets import preset_path
from constcl.engine.pretrain import pretrain
from constcl.eval import classify, detect, propagate, track
from constcl.eval.settings import EncoderSettings
from constcl.models.constcl import REGION_VARIANTS, VARIANTS
from constcl.report import ReportInputs, write_report
from constcl.runlock import run_lock

log = logging.getLogger("constcl.bench")

TASKS = ("classify", "knn", "detect", "track", "propagate")
# task -> [(column title, key in results.json["metrics"])]
HEADLINES = {
    "classify": [("linear top-1", "top1")],
    "knn": [("kNN R@1", "recall@1")],
    "detect": [("AVA-style mAP", "map")],
    "track": [("OTB precision@20", "precision_20"), ("OTB success AUC", "success_auc")],
    "propagate": [("DAVIS J&F", "J&F-Mean")],
}
COLUMNS = [title for task in TASKS for title, _ in HEADLINES[task]]
# the Budget fields a task's numbers depend on beyond the pretrained encoder: a rerun into the
# same --out that changes only these re-evaluates only those tasks and reuses the pretraining
TASK_FIELDS = {"classify": ("probe_weight_decay",), "knn": (), "detect": ("probe_weight_decay",),
               "track": ("otb_sequences", "otb_subset", "local_sets"),
               "propagate": ("davis_sequences", "local_sets")}
LOCAL_SETS = ("v2", "v3")  # docs/synthetic_world.md: the world's own sets / the look-alike sets
LOCAL_SETS_TEXT = {"v2": "the val videos' own tracks and masks",
                   "v3": "look-alike instances crossing the target, docs/synthetic_world.md"}
# the statistics of the local mechanism read from a run's metrics.jsonl (the mean over its
# last MECHANISM_TAIL logged steps): models.constcl / losses.region_info_nce
MECHANISM = ("attn_entropy", "region_match_accuracy", "region_match_chance",
             "region_contrast_accuracy")
MECHANISM_TAIL = 5
# how eval track picks its OTB targets (recorded so that numbers from the older first-N pick,
# which covered one or two of the world's 12 classes, are evaluated again rather than reused)
OTB_SUBSET = "spread"
EVAL_FIELDS = {f for fields in TASK_FIELDS.values() for f in fields}
# tasks whose feature cache the bench deletes after the evaluation: DAVIS keeps float16 maps of
# every frame, about 20 MB per sequence (1.3 GB per encoder and branch at 64 sequences, 24 GB
# for a 5-seed bench); the classification cache is small and kNN reads it
DISCARD_CACHE = ("propagate",)
RANDOM = "random init"


@dataclass
class Budget:
    """Everything that sets the cost and the outcome of a bench run."""

    steps: int = 600
    videos: int = 500
    backbone: str = "r3d_small"
    frames: int = 8
    size: int = 112
    batch: int = 16
    seeds: tuple[int, ...] = (0, 1, 2)
    world_seed: int = 0
    # VARIANTS adds the region ablation; supervised is the reference every table carries
    variants: tuple[str, ...] = ("cvrl", "constcl", "supervised")
    color_strength: float | None = None  # None: the demo preset's
    probe_weight_decay: float = 1e-3
    # one sequence moves a seed's OTB / DAVIS number by at most ~1.6 points (24 / 18 did by
    # 4-6: the tracking columns then mostly measured which sequences failed)
    otb_sequences: int = 64
    davis_sequences: int = 64
    extra: list[str] = field(default_factory=list)  # pretraining overrides
    # which OTB / DAVIS sets the tracking columns use (docs/synthetic_world.md)
    local_sets: str = "v3"
    # budget scaling (--steps 600,2400,6000): more pretraining budgets beyond ``steps``, run for
    # ``scaling_variants`` and evaluated on every task like the base budget
    scaling_steps: tuple[int, ...] = ()
    scaling_variants: tuple[str, ...] = ("cvrl", "constcl")

    def check(self) -> None:
        """Raise ValueError naming a field with a value the bench cannot run."""
        if self.local_sets not in LOCAL_SETS:
            raise ValueError(f"local_sets must be one of {list(LOCAL_SETS)}; got "
                             f"{self.local_sets!r}")
        for name in ("steps", "videos", "batch", "otb_sequences", "davis_sequences"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        if any(n < 1 or n == self.steps for n in self.scaling_steps):
            raise ValueError(f"scaling steps must be positive and differ from the base "
                             f"budget {self.steps}; got {list(self.scaling_steps)}")
        for variant in (*self.variants, *self.scaling_variants):
            if variant not in VARIANTS:
                raise ValueError(f"unknown variant {variant!r}; allowed: {list(VARIANTS)}")


def branches_of(variant: str) -> tuple[str, ...]:
    """The res5 branches an encoder of ``variant`` has: global, and local where it has one."""
    return ("global", "local") if variant in REGION_VARIANTS else ("global",)


def local_sets_dir(out: Path, b: Budget) -> Path:
    """Folder of the bench's v3 local sets (generated beside the world)."""
    n = max(b.otb_sequences, b.davis_sequences)
    return out / f"local_v3-n{n}-s{b.world_seed}"


def train_split_source(world: Path, out: Path) -> Path:
    """A ``path,label`` CSV of the world's training split (the class name as label: sorted, as
    the world's labels are) for the supervised reference, which must not see test labels."""
    text = "path,label\n" + "".join(f"{world / r['path']},{r['class_name']}\n"
                                    for r in split_videos(world, "train"))
    path = out / "supervised_train.csv"
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def run_name(variant: str, seed: int, steps: int, base_steps: int) -> str:
    """Pretraining run folder of (variant, seed, steps): ``cvrl-s0`` at the bench's base budget
    (as before budget scaling), ``cvrl-s0-n2400`` at another budget of ``--steps``."""
    return f"{variant}-s{seed}" + ("" if steps == base_steps else f"-n{steps}")


def pretrain_variant(variant: str, seed: int, world: Path, out: Path, b: Budget,
                     name: str | None = None) -> Path:
    """Pretrain one variant with the demo preset and the bench budget (run folder ``out/name``,
    ``variant-s<seed>`` by default); returns the backbone."""
    source = train_split_source(world, out.parent) if variant == "supervised" \
        else world / "videos"
    overrides = [
        f"data.source={source}", f"model.variant={variant}",
        f"model.backbone={b.backbone}", f"data.clip_frames={b.frames}", f"data.size={b.size}",
        f"train.steps={b.steps}", f"train.batch_size={b.batch}", f"train.seed={seed}",
        f"train.out_dir={out}", f"train.run_name={name or f'{variant}-s{seed}'}",
        "train.time_limit_minutes=0", "train.progress=plain"]
    if b.color_strength is not None:
        overrides.append(f"data.color_strength={b.color_strength}")
    cfg = load_config(preset_path("demo"), overrides + list(b.extra))
    return pretrain(cfg) / "backbone.safetensors"


def input_norm(b: Budget) -> str:
    """The pretrained networks' ``model.input_norm`` (the demo preset's unless ``b.extra``
    overrides it); the random-init baseline gets the same, so that it differs only in weights."""
    return load_config(preset_path("demo"), list(b.extra)).model.input_norm


def task_settings(task: str, encoder: dict, world: Path, b: Budget,
                  folder: Path) -> EncoderSettings:
    """The settings of one task for one encoder (small clips, few views).

    ``encoder`` holds the :class:`~constcl.eval.settings.EncoderSettings` fields (checkpoint,
    backbone, branch, seed); ``folder`` is the task's output folder.
    """
    common = {**encoder, "out": folder}
    clip = {"frames": b.frames, "size": b.size}
    probe = {"epochs": 60, "weight_decay": b.probe_weight_decay}
    if task == "classify":
        return classify.Settings(**common, data=world, **clip, clips=2, crops=1, **probe)
    if task == "knn":  # kNN retrieval, reusing the linear probe's feature cache
        return classify.Settings(**common, mode="knn", data=world, **clip, clips=2, crops=1,
                                 cache_dir=folder.parent / "classify" / "cache")
    if task == "detect":
        return detect.Settings(**common, data=world, **clip, **probe)
    # res5 (dilated to stride 8), so that the global and local res5 copies can differ; the
    # trackers' default res4 is shared by both branches
    # no DataLoader workers here: the frame-by-frame trackers get every core
    local = world if b.local_sets == "v2" else local_sets_dir(world.parent, b)
    if task == "track":
        return track.Settings(**common, data=local / "otb", sequences=b.otb_sequences,
                              stage="res5", threads=os.cpu_count() or 1)
    if task == "propagate":
        return propagate.Settings(**common, data=local / "davis", sequences=b.davis_sequences,
                                  stage="res5", threads=os.cpu_count() or 1)
    raise ValueError(f"task must be one of {list(TASKS)}; got {task!r}")


RUNNERS = {"classify": classify.run, "knn": classify.run, "detect": detect.run,
           "track": track.run, "propagate": propagate.run}


def evaluate(name: str, checkpoint: str, branch: str, seed: int, world: Path, out: Path,
             b: Budget, tasks: tuple[str, ...] = TASKS, tag: str = ""
             ) -> dict[str, float | None]:
    """``tasks`` (all by default) for one encoder and branch; returns {column title: value in
    [0, 1] or None} for their columns. ``tag`` tells budgets apart in the eval folder names
    (``-n2400``)."""
    values: dict[str, float | None] = {}
    encoder = {"checkpoint": checkpoint, "backbone": b.backbone, "branch": branch, "seed": seed,
               "input_norm": input_norm(b) if checkpoint == "random" else None}
    for task in tasks:
        folder = out / "eval" / f"{name}{tag}-{branch}-s{seed}" / task
        settings = task_settings(task, encoder, world, b, folder)
        metrics = RUNNERS[task](settings)["metrics"]
        if task in DISCARD_CACHE:  # keyed by this checkpoint: no later evaluation reads it
            shutil.rmtree(settings.feature_cache_dir, ignore_errors=True)
        for title, key in HEADLINES[task]:
            value = metrics.get(key)
            values[title] = None if value is None else float(value)
    return values


def summarise(runs: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds per (encoder, branch), in first-seen order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["encoder"], run["branch"]), []).append(run)
    out = []
    for (encoder, branch), items in groups.items():
        row = {"encoder": encoder, "branch": branch, "seeds": [r["seed"] for r in items],
               "mean": {}, "std": {}}
        for column in COLUMNS:
            values = [r["values"][column] for r in items if r["values"].get(column) is not None]
            row["mean"][column] = statistics.fmean(values) if values else None
            row["std"][column] = statistics.stdev(values) if len(values) > 1 else None
        out.append(row)
    return out


def demo_color_strength() -> float:
    """The demo preset's ``data.color_strength`` (what the bench uses unless told otherwise)."""
    return load_config(preset_path("demo")).data.color_strength


def paired_differences(runs: list[dict]) -> list[dict]:
    """Per-seed differences between encoders trained (or drawn) with the same seed: every
    pretrained (encoder, branch) minus random init, and every ConST-CL / region branch minus
    CVRL. Returns rows {"row": (encoder, branch), "baseline": (encoder, branch), "column":
    {title: (mean, standard error, seeds, seeds where the row is ahead)}} for pairs that share
    at least two seeds. Seeds pair up because both members of a pair see the same world, and
    pretrained variants the same data order; the standard error of the mean difference is
    the number to compare with zero."""
    by_key = {(r["encoder"], r["branch"], r["seed"]): r["values"] for r in runs}
    groups = list(dict.fromkeys((r["encoder"], r["branch"]) for r in runs))
    pairs = [(g, (RANDOM, "global")) for g in groups if g[0] != RANDOM]
    pairs += [(g, ("cvrl", "global")) for g in groups if g[0] not in (RANDOM, "cvrl")]
    out = []
    for row, base in pairs:
        seeds = sorted({s for e, b, s in by_key if (e, b) == row} &
                       {s for e, b, s in by_key if (e, b) == base})
        if len(seeds) < 2:
            continue
        columns = {}
        for column in COLUMNS:
            diffs = [by_key[(*row, s)][column] - by_key[(*base, s)][column] for s in seeds
                     if by_key[(*row, s)].get(column) is not None
                     and by_key[(*base, s)].get(column) is not None]
            if len(diffs) >= 2:
                columns[column] = (statistics.fmean(diffs),
                                   statistics.stdev(diffs) / len(diffs) ** 0.5, len(diffs),
                                   sum(d > 0 for d in diffs))
        out.append({"row": row, "baseline": base, "column": columns})
    return out


def _paired_table(runs: list[dict]) -> list[str]:
    rows = paired_differences(runs)
    if not rows:
        return []
    lines = ["", "Paired by seed (row minus baseline, the same seed): mean ± standard error in "
             "points, then in how many seeds the row is ahead. A difference is resolved when "
             "it is more than about two standard errors from zero.", "",
             "| encoder, branch | minus | " + " | ".join(COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = []
        for column in COLUMNS:
            if column not in r["column"]:
                cells.append("n/a")
                continue
            mean, se, n, ahead = r["column"][column]
            cells.append(f"{100 * mean:+.1f} ± {100 * se:.1f} ({ahead}/{n})")
        lines.append(f"| {r['row'][0]}, {r['row'][1]} | {r['baseline'][0]} | "
                     + " | ".join(cells) + " |")
    return lines


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{100 * mean:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} compute "
            f"thread(s) per process, torch {torch.__version__}")


def provenance(runs: list[dict], minutes: float) -> str:
    """How long this call took and, where it continued an earlier bench in the same folder,
    which evaluations it reused and when those were made."""
    old = [r for r in runs if r.get("reused")]
    partial = [r for r in runs if r.get("reevaluated")]
    if not old and not partial:
        return f"whole bench {minutes:.1f} min."
    # when the reused tasks were evaluated (records from before per-task times: "evaluated")
    made = sorted(t for r in old + partial
                  for task, t in (r.get("task_times")
                                  or dict.fromkeys(TASKS, r.get("evaluated"))).items()
                  if t and task not in r.get("reevaluated", ()))
    when = f", made {made[0]} to {made[-1]}" if made else ""
    new = len(runs) - len(old) - len(partial)
    done_now = []
    if partial:
        tasks = sorted({t for r in partial for t in r["reevaluated"]}, key=TASKS.index)
        which = "those tasks" if len(tasks) > 1 else "that task"
        done_now.append(f"{len(partial)} had only {' and '.join(tasks)} evaluated again by this "
                        f"call (an evaluation setting of {which} changed; pretraining and the "
                        f"other tasks reused)")
    if new:
        done_now.append(f"the other {new} were made by this call")
    if not done_now:
        done_now.append("this call only wrote the tables")
    return (f"this call {minutes:.1f} min; it continued an earlier bench in the same folder: "
            f"{len(old)} of {len(runs)} evaluations were reused whole from its runs.jsonl"
            f"{when} (same budget), " + "; ".join(done_now) + ".")


def write_results(out: Path, runs: list[dict], b: Budget, minutes: float, plots: list[Path],
                  command: str, extra_text: str = "") -> None:
    """``RESULTS.md``, ``results.json`` and ``report.html`` from the per-seed runs."""
    summary = summarise(runs)
    seeds = ",".join(str(s) for s in b.seeds)
    strength = str(b.color_strength if b.color_strength is not None else demo_color_strength())
    header = [
        "# Results: random init vs CVRL vs region vs ConST-CL vs supervised on the synthetic "
        "world", "",
        f"Date {time.strftime('%Y-%m-%d %H:%M')}; machine: CPU ({machine()}); "
        + provenance(runs, minutes), "", f"Command: `{command}`", "",
        f"Budget: {b.steps} pretraining steps x {b.batch} videos per variant and seed, backbone "
        f"{b.backbone}, clips {b.frames} x {b.size}^2, colour strength {strength}, input "
        f"normalisation {input_norm(b)} (random init too); training "
        f"seeds {seeds} (the random-init network is drawn with each seed too); world seed "
        f"{b.world_seed}, {b.videos} videos (128 x 128, 64 frames). Evaluation: linear probe "
        f"(60 epochs, weight decay {b.probe_weight_decay}) and kNN on the UCF101-style split 1 "
        f"(2 clips per video), AVA-style frame mAP with a probe on ground-truth boxes, OTB and "
        f"DAVIS on res5 dilated to stride 8, local sets {b.local_sets} "
        f"({LOCAL_SETS_TEXT[b.local_sets]}; {b.otb_sequences} OTB targets spread evenly over "
        f"the list sorted by name, the first {b.davis_sequences} DAVIS val sequences). All "
        f"numbers in %, mean ± standard deviation over seeds.", "",
    ]
    table = ["| encoder | branch | " + " | ".join(COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    table += [f"| {r['encoder']} | {r['branch']} | "
              + " | ".join(_cell(r["mean"][c], r["std"][c]) for c in COLUMNS) + " |"
              for r in summary]
    per_seed = ["", "Every seed:", "", "| encoder | branch | seed | " + " | ".join(COLUMNS) + " |",
                "|---|---|---|" + "---|" * len(COLUMNS)]
    per_seed += [f"| {r['encoder']} | {r['branch']} | {r['seed']} | "
                 + " | ".join(_cell(r["values"][c], None) for c in COLUMNS) + " |" for r in runs]
    text = "\n".join(header + table + _paired_table(runs) + per_seed) + "\n" \
        + (f"\n{extra_text}\n" if extra_text else "")
    (out / "RESULTS.md").write_text(text)
    (out / "results.json").write_text(json.dumps(
        {"budget": asdict(b), "command": command, "machine": machine(), "minutes": minutes,
         "summary": summary, "paired": paired_differences(runs),
         "runs": [{k: v for k, v in r.items() if k != "budget"} for r in runs]}, indent=2))
    write_report(ReportInputs(
        out=out, title=header[0].lstrip("# "), setup=[line for line in header[2:] if line],
        summary=summary, runs=runs, plots=plots, random_name=RANDOM,
        tasks={task: [title for title, _ in HEADLINES[task]] for task in TASKS}))


LOCAL_COLUMNS = ("AVA-style mAP", "OTB precision@20", "OTB success AUC", "DAVIS J&F")


def _by_steps(rows: list[dict], variants: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """(steps, encoder, branch) -> its per-seed records, for the encoders of ``variants``."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["encoder"] in variants:
            groups.setdefault((r["steps"], r["encoder"], r["branch"]), []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], variants.index(kv[0][1]),
                                                        kv[0][2] != "global")))


def _mean_sd(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "n/a"
    text = f"{scale * statistics.fmean(values):.{digits}f}"
    return text + (f" ± {scale * statistics.stdev(values):.{digits}f}" if len(values) > 1
                   else "")


def scaling_section(out: Path, base: list[dict], scaling: list[dict], b: Budget) -> str:
    """RESULTS.md's budget-scaling section: every (steps, encoder, branch) of
    ``scaling_variants`` with its local-task numbers and the local mechanism's statistics at the
    end of pretraining, the paired ConST-CL minus CVRL differences per budget, and a chart per
    local task and for the attention against steps (``out/scaling/*.png``)."""
    groups = _by_steps(base + scaling, b.scaling_variants)
    columns = ["linear top-1", *LOCAL_COLUMNS]
    lines = ["## Budget scaling", "",
             f"The same bench at {', '.join(str(n) for n in sorted({b.steps, *b.scaling_steps}))}"
             f" pretraining steps (each budget a full run with its own warm-up and cosine "
             f"schedule), seeds {','.join(str(x) for x in b.seeds)}; mean ± standard deviation "
             f"over seeds. Attention entropy is the decoder's, relative to log N (1.0 = "
             f"uniform: the context is the other view's mean); match accuracy is how often a "
             f"translated box is closest to its partner among its own video's boxes (chance in "
             f"brackets); both are the mean over the last {MECHANISM_TAIL} logged steps of "
             f"pretraining.", "",
             "| steps | encoder | branch | seeds | " + " | ".join(columns)
             + " | attention entropy | match accuracy (chance) |",
             "|---|---|---|---|" + "---|" * (len(columns) + 2)]
    for (steps, encoder, branch), items in groups.items():
        cells = [_mean_sd([r["values"][c] for r in items if r["values"].get(c) is not None])
                 for c in columns]
        mech = [r.get("mechanism") or {} for r in items]
        ent = [m["attn_entropy"] for m in mech if "attn_entropy" in m]
        acc = [m["region_match_accuracy"] for m in mech if "region_match_accuracy" in m]
        chance = [m["region_match_chance"] for m in mech if "region_match_chance" in m]
        match = "n/a" if not acc else (f"{_mean_sd(acc)} ({100 * statistics.fmean(chance):.1f})"
                                       if chance else _mean_sd(acc))
        attention = _mean_sd(ent, scale=1.0, digits=4) if ent else "n/a"
        lines.append(f"| {steps} | {encoder} | {branch} | {len(items)} | " + " | ".join(cells)
                     + f" | {attention if branch == 'local' else ''} | "
                     + f"{match if branch == 'local' else ''} |")
    lines += ["", "Paired by seed at each budget (ConST-CL branch minus CVRL, the same seed and "
              "budget): mean ± standard error in points (seeds ahead / seeds).", "",
              "| steps | row | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for steps in sorted({b.steps, *b.scaling_steps}):
        base_rows = {r["seed"]: r["values"] for r in groups.get((steps, "cvrl", "global"), [])}
        for encoder, branch in (("constcl", "local"), ("constcl", "global")):
            rows = {r["seed"]: r["values"] for r in groups.get((steps, encoder, branch), [])}
            seeds = sorted(set(rows) & set(base_rows))
            if not seeds:
                continue
            cells = []
            for c in columns:
                d = [rows[x][c] - base_rows[x][c] for x in seeds
                     if rows[x].get(c) is not None and base_rows[x].get(c) is not None]
                if not d:
                    cells.append("n/a")
                    continue
                se = f" ± {100 * statistics.stdev(d) / len(d) ** 0.5:.1f}" if len(d) > 1 else ""
                cells.append(f"{100 * statistics.fmean(d):+.1f}{se} "
                             f"({sum(x > 0 for x in d)}/{len(d)})")
            lines.append(f"| {steps} | {encoder} {branch} - cvrl | " + " | ".join(cells) + " |")
    for png in scaling_figures(out / "scaling", groups, columns):
        lines += ["", f"![{png.stem}]({png.relative_to(out).as_posix()})"]
    return "\n".join(lines)


def scaling_figures(folder: Path, groups: dict[tuple, list[dict]], columns: list[str]
                    ) -> list[Path]:
    """One chart per task column and one for the attention entropy and match accuracy, each
    against pretraining steps (log axis); a line per (encoder, branch), seed means with their
    standard deviation as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from constcl.report.charts import encoder_colour, save_figure

    series: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for (steps, encoder, branch), items in groups.items():
        series.setdefault((encoder, branch), {})[steps] = items
    panels = [(c, lambda r, c=c: r["values"].get(c)) for c in columns]
    panels += [(k, lambda r, k=k: (r.get("mechanism") or {}).get(k))
               for k in ("attn_entropy", "region_match_accuracy")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, get) in zip(axes[0], panels, strict=True):
        for (encoder, branch), by_steps in series.items():
            xs, ys, es = [], [], []
            for steps, items in sorted(by_steps.items()):
                vals = [v for v in map(get, items) if v is not None]
                if vals:
                    xs.append(steps)
                    ys.append(statistics.fmean(vals))
                    es.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3,
                            color=encoder_colour(encoder),
                            linestyle="-" if branch == "global" else "--",
                            label=f"{encoder} {branch}")
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("pretraining steps", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    return [save_figure(fig, folder / "scaling.png")]


def run_budget(b: Budget) -> dict:
    """The fields of ``b`` that decide one (encoder, branch, seed) evaluation's numbers: all but
    the lists of seeds and variants, with the colour strength resolved (the pretraining fields
    and ``EVAL_FIELDS``)."""
    fields = asdict(b)
    del fields["seeds"], fields["variants"], fields["scaling_steps"], fields["scaling_variants"]
    fields["base_steps"] = b.steps  # "steps" is each record's own budget (scaling records)
    if fields["color_strength"] is None:
        fields["color_strength"] = demo_color_strength()
    fields["otb_subset"] = OTB_SUBSET
    return fields


def read_finished(done: Path, want: dict) -> dict[tuple[str, str, int, int], dict]:
    """The evaluations recorded in ``done`` (``runs.jsonl``), keyed by (encoder, branch, seed,
    pretraining steps); the last record of a key wins.

    Every record carries the budget it was made with (``run_budget``); a record whose
    pretraining budget differs from ``want`` is an error rather than a silent mix of two
    experiments in one table. Records that differ only in ``EVAL_FIELDS`` are returned: the
    tasks those fields affect are evaluated again (``stale_tasks``)."""
    finished = {}
    if not done.exists():
        return finished
    for number, line in enumerate(done.read_text().splitlines(), 1):
        if not line.strip():
            continue
        r = json.loads(line)
        have = r.get("budget")
        if have is None:
            raise ValueError(f"{done} line {number} records no budget (written by an older "
                             f"constcl); use a new --out folder")
        have.setdefault("base_steps", have.get("steps"))  # before budget scaling
        differ = sorted(k for k in want if have.get(k) != want[k]
                        and k not in EVAL_FIELDS and k != "steps")
        if differ:
            raise ValueError(
                f"{done} line {number} was evaluated with another budget ("
                + ", ".join(f"{k} {have.get(k)!r} there, {want[k]!r} now" for k in differ)
                + "); use a new --out folder, or the same budget to continue that bench")
        finished[(r["encoder"], r["branch"], r["seed"], int(have["steps"]))] = r
    return finished


def mechanism(run_dir: Path) -> dict[str, float]:
    """The local mechanism's statistics at the end of a pretraining run: each ``MECHANISM``
    key's mean over the last ``MECHANISM_TAIL`` logged steps of its ``metrics.jsonl`` (keys
    the run did not log are left out)."""
    rows = []
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut by a kill
                continue
    out = {}
    for key in MECHANISM:
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        if values:
            out[key] = statistics.fmean(values[-MECHANISM_TAIL:])
    return out


def stale_tasks(record: dict | None, want: dict) -> tuple[str, ...]:
    """The tasks to evaluate for a (encoder, branch, seed): all without a record, otherwise
    those whose ``TASK_FIELDS`` differ from ``want`` or whose columns the record lacks."""
    if record is None:
        return TASKS
    have = record["budget"]
    return tuple(task for task in TASKS
                 if any(have.get(f) != want[f] for f in TASK_FIELDS[task])
                 or any(title not in record["values"] for title, _ in HEADLINES[task]))


def run_bench(b: Budget, out: str | Path, command: str = "constcl bench") -> list[dict]:
    """Pretrain and evaluate everything of ``b`` into ``out``; write ``RESULTS.md``,
    ``results.json`` and ``report.html`` there (``command`` is quoted in them); return the
    per-seed runs.

    Finished evaluations are kept in ``out/runs.jsonl`` with their budget and time, so calling
    it again with the same ``out`` and budget continues where it stopped, and adding seeds or
    variants evaluates only what is new (finished pretraining runs are resumed, not redone);
    changing only an evaluation setting (``EVAL_FIELDS``) evaluates again only the tasks it
    affects. RESULTS.md says which evaluations were reused and when they were made.
    A second process on the same ``out`` is refused (``runlock.run_lock``)."""
    with run_lock(out, command):
        return _run_bench(b, out, command)


def _run_bench(b: Budget, out: str | Path, command: str) -> list[dict]:
    """:func:`run_bench` while holding the folder's lock."""
    b.check()
    began = time.time()
    # evaluations decode with 2 DataLoader workers; more compute threads than free cores makes
    # PyTorch's CPU kernels many times slower
    torch.set_num_threads(max(1, (torch.get_num_threads() or 2) // 2))
    out = Path(out).resolve()
    world = out / f"world-n{b.videos}-s{b.world_seed}"
    generate_world(world, num_videos=b.videos, seed=b.world_seed, size=128, tracks="val")
    if b.local_sets == "v3":
        generate_local_sets(local_sets_dir(out, b), max(b.otb_sequences, b.davis_sequences),
                            seed=b.world_seed, size=128, frames=64)
    runs: list[dict] = []
    scaling: list[dict] = []
    done = out / "runs.jsonl"  # finished evaluations, so a rerun continues where it stopped
    budget = run_budget(b)
    finished = read_finished(done, budget)

    reused = set(finished)

    def evaluate_all(name: str, checkpoint: str, branches: tuple[str, ...], seed: int,
                     steps: int, into: list[dict], stats: dict | None = None) -> None:
        want = {**budget, "steps": steps}
        tag = "" if steps == b.steps else f"-n{steps}"
        for branch in branches:
            key = (name, branch, seed, steps)
            old = finished.get(key)
            todo = stale_tasks(old, want)
            if todo:
                values = evaluate(name.replace(" ", "_"), checkpoint, branch, seed, world, out,
                                  b, todo, tag)
                now = time.strftime("%Y-%m-%d %H:%M")
                times = {task: now for task in TASKS}
                if old is not None:  # keep when the reused tasks were evaluated
                    before = old.get("task_times") or {}
                    times.update({task: before.get(task, old.get("evaluated"))
                                  for task in TASKS if task not in todo})
                finished[key] = {"encoder": name, "branch": branch, "seed": seed,
                                 "steps": steps,
                                 "values": {**(old or {}).get("values", {}), **values},
                                 "budget": want, "evaluated": now, "task_times": times}
                if stats or (old or {}).get("mechanism"):
                    finished[key]["mechanism"] = stats or old["mechanism"]
                with done.open("a") as f:
                    f.write(json.dumps(finished[key]) + "\n")
            into.append({**finished[key], "steps": steps,
                         "reused": key in reused and not todo,
                         "reevaluated": list(todo) if old is not None else []})
            log.info("%s / %s / seed %d / %d steps: %s", name, branch, seed, steps,
                     finished[key]["values"])

    def pretrained(variant: str, seed: int, steps: int, into: list[dict]) -> None:
        want = {**budget, "steps": steps}
        name = run_name(variant, seed, steps, b.steps)
        if not any(stale_tasks(finished.get((variant, br, seed, steps)), want)
                   for br in branches_of(variant)):
            ckpt = "unused"
        else:
            at_steps = Budget(**{**asdict(b), "steps": steps})
            ckpt = str(pretrain_variant(variant, seed, world, out / "runs", at_steps, name))
        evaluate_all(variant, ckpt, branches_of(variant), seed, steps, into,
                     mechanism(out / "runs" / name))

    for seed in b.seeds:
        # random init first: fails early if an evaluation breaks
        evaluate_all(RANDOM, "random", ("global",), seed, b.steps, runs)
        for variant in b.variants:
            pretrained(variant, seed, b.steps, runs)
    for steps in sorted(b.scaling_steps):
        for seed in b.seeds:
            for variant in b.scaling_variants:
                pretrained(variant, seed, steps, scaling)
    order = {name: i for i, name in enumerate((RANDOM, *VARIANTS))}
    runs.sort(key=lambda r: (order[r["encoder"]], r["branch"] != "global", r["seed"]))
    plots = sorted((out / "eval").rglob("*.png"))
    extra = scaling_section(out, runs, scaling, b) if scaling else ""
    write_results(out, runs, b, (time.time() - began) / 60, plots, command, extra)
    return runs + scaling
