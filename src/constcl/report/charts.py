"""Comparison charts, the verdict per metric, and pretraining curves of a bench report.

Inputs are the bench's ``summary`` rows (``{"encoder", "branch", "seeds", "mean": {column:
value}, "std": {column: value}}``, values in [0, 1]) and per-seed ``runs`` (``{"encoder",
"branch", "seed", "values": {column: value}}``), as ``constcl.benchmark.summarise`` and
``run_bench`` make them. Every figure is drawn with matplotlib's Agg backend into a PNG.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["CURVE_KEYS", "MECHANISM_KEYS", "UPDATE_PARTS", "Verdict", "comparison_chart",
           "comparison_figure", "curve_figures", "overview_figure", "save_figure",
           "encoder_colour", "label", "read_metrics", "verdict"]

# (metrics.jsonl key, panel title) of the training-curve figure
CURVE_KEYS = (("loss_global", "global loss (NT-Xent)"), ("loss_region", "region loss (InfoNCE)"),
              ("global_accuracy", "contrastive accuracy (global)"))
# is the local mechanism working? (models.constcl: attention entropy / log N, 1.0 = uniform;
# losses.region_info_nce: match accuracy among the same video's boxes and its chance level)
MECHANISM_KEYS = (("attn_entropy", "decoder attention entropy / log N"),
                  ("region_match_accuracy", "region match accuracy (own video)"),
                  ("region_match_chance", "match accuracy by chance"),
                  ("region_contrast_accuracy", "region contrastive accuracy"))
# model parts of engine.monitor.UpdateMonitor, logged as update_ratio_<part>
UPDATE_PARTS = ("trunk", "res5_global", "res5_local", "global_head", "region_head")
_PALETTE = {"random init": "#8c8c8c", "cvrl": "#1f77b4", "region": "#ff7f0e",
            "constcl": "#2ca02c"}


def encoder_colour(encoder: str) -> str:
    """A fixed colour per encoder (variant), the same in every figure of the report."""
    if encoder in _PALETTE:
        return _PALETTE[encoder]
    return matplotlib.colors.to_hex(plt.get_cmap("tab10")(3 + len(encoder) % 7))


def label(encoder: str, branch: str) -> str:
    """How an (encoder, branch) pair is named in tables and figures."""
    return f"{encoder} / {branch}"


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save ``fig`` as a PNG (creating the folder) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def comparison_chart(task: str, columns: Sequence[str], summary: list[dict], runs: list[dict],
                     path: Path) -> Path:
    """:func:`comparison_figure` saved to ``path``."""
    return save_figure(comparison_figure(task, columns, summary, runs), path)


def comparison_figure(task: str, columns: Sequence[str], summary: list[dict],
                      runs: list[dict]) -> plt.Figure:
    """Bars of each (encoder, branch) per column of ``task`` (one panel per column, bars in
    ``summary`` order, in %): mean over seeds (label on top), error bar = sample standard
    deviation, one dot per seed; the local branch hatched."""
    fig, axes = plt.subplots(1, len(columns), figsize=(max(5.5, 0.75 * len(summary) + 2.5)
                                                       * len(columns), 3.6), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        for x, row in enumerate(summary):
            mean, std = row["mean"].get(column), row["std"].get(column)
            colour = encoder_colour(row["encoder"])
            if mean is None:
                ax.text(x, 1, "n/a", ha="center", fontsize=8)
                continue
            ax.bar(x, 100 * mean, color=colour, alpha=0.85, edgecolor="black", linewidth=0.6,
                   hatch="//" if row["branch"] == "local" else None)
            if std is not None:
                ax.errorbar(x, 100 * mean, yerr=100 * std, color="black", capsize=4,
                            linewidth=1.2)
            seeds = [r["values"].get(column) for r in runs
                     if (r["encoder"], r["branch"]) == (row["encoder"], row["branch"])]
            seeds = [100 * v for v in seeds if v is not None]
            ax.scatter(np.full(len(seeds), x) + np.linspace(-0.15, 0.15, len(seeds)), seeds,
                       s=12, color="black", zorder=3)
            top = 100 * mean + (100 * std if std else 0)
            ax.text(x, top + 1, f"{100 * mean:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(summary)),
                      [label(r["encoder"], r["branch"]).replace(" / ", "\n") for r in summary],
                      fontsize=8)
        ax.set_ylabel(f"{column} (%)")
        top = max([100 * ((r["mean"].get(column) or 0) + (r["std"].get(column) or 0))
                   for r in summary] + [1.0])
        ax.set_ylim(0, min(105, top * 1.18 + 2))
        ax.set_title(column, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{task}: mean over seeds, error bar = standard deviation,\n"
                 "dots = seeds; hatched = local branch", fontsize=9)
    fig.tight_layout()
    return fig


def overview_figure(columns: Sequence[str], summary: list[dict],
                    random_name: str = "random init") -> plt.Figure | None:
    """Every column in one chart: per (encoder, branch) other than random init, its mean minus
    random init's mean (points), error bar sqrt(std^2 + std_random^2) (the spread of a
    difference of independent means); None without a random-init row."""
    base = next((r for r in summary if r["encoder"] == random_name), None)
    rows = [r for r in summary if r["encoder"] != random_name]
    if base is None or not rows:
        return None
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.5 * len(columns) + 2), 3.6))
    for i, row in enumerate(rows):
        xs, gaps, errs = [], [], []
        for x, column in enumerate(columns):
            m, m0 = row["mean"].get(column), base["mean"].get(column)
            if m is None or m0 is None:
                continue
            s, s0 = row["std"].get(column), base["std"].get(column)
            xs.append(x - 0.4 + width * (i + 0.5))
            gaps.append(100 * (m - m0))
            errs.append(math.nan if s is None or s0 is None else 100 * math.hypot(s, s0))
        ax.bar(xs, gaps, width * 0.95, color=encoder_colour(row["encoder"]), alpha=0.85,
               edgecolor="black", linewidth=0.6, hatch="//" if row["branch"] == "local" else None,
               label=label(row["encoder"], row["branch"]))
        ax.errorbar(xs, gaps, yerr=errs, fmt="none", color="black", capsize=3, linewidth=1)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_ylabel(f"points above {random_name}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(3, len(rows)), loc="best")
    ax.set_title(f"every metric: mean minus {random_name}'s mean over seeds; error bar = "
                 "spread of the difference", fontsize=9)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class Verdict:
    """The best (encoder, branch) on one column and how it compares.

    gap_next / gap_random: best mean minus the runner-up's / the random init's (fractions);
    separated_*: the gap exceeds the sum of the two standard deviations (None when a spread
    is unknown, e.g. one seed).
    """

    column: str
    best: str
    mean: float
    std: float | None
    runner_up: str | None
    gap_next: float | None
    separated_next: bool | None
    gap_random: float | None
    separated_random: bool | None


def _separated(a: dict, b: dict, column: str) -> tuple[float, bool | None]:
    gap = a["mean"][column] - b["mean"][column]
    sa, sb = a["std"].get(column), b["std"].get(column)
    return gap, None if sa is None or sb is None else gap > sa + sb


def verdict(column: str, summary: list[dict], random_name: str = "random init"
            ) -> Verdict | None:
    """Who is best on ``column`` and by how much (None when no row has a value)."""
    rows = sorted((r for r in summary if r["mean"].get(column) is not None),
                  key=lambda r: -r["mean"][column])
    if not rows:
        return None
    best = rows[0]
    runner = rows[1] if len(rows) > 1 else None
    gap_next, sep_next = _separated(best, runner, column) if runner else (None, None)
    random = next((r for r in rows if r["encoder"] == random_name), None)
    gap_random, sep_random = (_separated(best, random, column)
                              if random is not None and random is not best else (None, None))
    return Verdict(column, label(best["encoder"], best["branch"]), best["mean"][column],
                   best["std"].get(column), label(runner["encoder"], runner["branch"])
                   if runner else None, gap_next, sep_next, gap_random, sep_random)


def read_metrics(path: Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` that carry a ``step`` (others are skipped)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def _curve(ax, rows: list[dict], key: str, colour: str, style: str, name: str,
           positive: bool = False) -> bool:
    """Draw one run's ``key`` over steps; ``positive``: leave out values <= 0 (log axes)."""
    points = [(r["step"], r[key]) for r in rows
              if isinstance(r.get(key), int | float) and math.isfinite(r[key])
              and (r[key] > 0 or not positive)]
    if not points:
        return False
    steps, values = zip(*points, strict=True)
    ax.plot(steps, values, color=colour, linestyle=style, marker=".", markersize=3,
            linewidth=1.3, label=name)
    return True


def curve_figures(curves: dict[tuple[str, int], list[dict]], folder: Path) -> list[Path]:
    """Training curves of every (variant, seed): losses and accuracy, the local mechanism's
    statistics (``MECHANISM_KEYS``, where logged), then the relative update size per model
    part (log scale, shared y axis); colour = variant, line style =
    seed. Returns the PNGs written (none when no run has metrics)."""
    if not curves:
        return []
    seeds = sorted({seed for _, seed in curves})
    styles = {s: ("-", "--", ":", "-.")[i % 4] for i, s in enumerate(seeds)}
    out = []
    parts = [p for p in UPDATE_PARTS
             if any(f"update_ratio_{p}" in r for rows in curves.values() for r in rows)]
    mechanism = [(k, t) for k, t in MECHANISM_KEYS
                 if any(k in r for rows in curves.values() for r in rows)]
    for name, keys, log in (("curves_losses.png", list(CURVE_KEYS), False),
                            ("curves_mechanism.png", mechanism, False),
                            ("curves_update_ratio.png",
                             [(f"update_ratio_{p}", p) for p in parts], True)):
        if not keys:
            continue
        fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.2),
                                 sharey=log, squeeze=False)
        for ax, (key, title) in zip(axes[0], keys, strict=True):
            drawn = False
            for (variant, seed), rows in curves.items():
                drawn |= _curve(ax, rows, key, encoder_colour(variant), styles[seed],
                                f"{variant} s{seed}", positive=log)
            if not drawn:
                ax.text(0.5, 0.5, "not logged", ha="center", transform=ax.transAxes)
            if log:
                ax.set_yscale("log")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        if log:
            axes[0][0].set_ylabel("|update| / |weights| per step", fontsize=8)
        fig.tight_layout()
        out.append(save_figure(fig, folder / name))
    return out
