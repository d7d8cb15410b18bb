"""``report.html`` of a bench run: one self-contained folder of HTML and PNGs.

Sections: the set-up (budget, machine, command) as text; "at a glance" (per metric the best
encoder and branch, its margin over the runner-up and over random init, and whether the margin
exceeds the seed spread); per task a comparison chart with seed error bars and qualitative
panels of every encoder side by side; the numbers (mean ± std, and every seed); the
pretraining curves of every variant; and every evaluation plot, folded. Images are written to
``OUT/report/`` and linked relatively, so the folder can be copied or served as it is.

The bench's folder layout is read as ``constcl.benchmark.run_bench`` writes it: evaluations in
``OUT/eval/<encoder>-<branch>-s<seed>/<task>/`` (spaces of the encoder name as ``_``) and
pretraining runs in ``OUT/runs/<variant>-s<seed>/metrics.jsonl``.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from constcl.report import charts, panels

__all__ = ["ReportInputs", "eval_folder", "headline", "telling_sequences", "write_report"]

log = logging.getLogger(__name__)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
  max-width: 1280px; padding: 0 1.2rem 3rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin: 1.2rem 0 0.6rem; }
h2 { font-size: 1.3rem; border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
h3 { font-size: 1.1rem; margin-top: 1.4rem; }
code { background: #f3f3f3; padding: 0.05rem 0.3rem; border-radius: 3px;
  overflow-wrap: anywhere; font-size: 0.9em; }
p.setup { margin: 0.3rem 0; overflow-wrap: anywhere; }
nav ul { display: flex; flex-wrap: wrap; gap: 0.4rem 1.2rem; list-style: none; padding: 0; }
.table-wrap { overflow-x: auto; margin: 0.6rem 0; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f0f2f5; text-align: center; }
td.name { text-align: left; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
td.best { font-weight: bold; background: #e6f4e6 !important; }
.yes { color: #1a7f1a; } .no { color: #b35900; }
figure { margin: 0.8rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.8rem; color: #555; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.8rem; }
.gallery figure { flex: 0 1 240px; margin: 0; }
.gallery.wide figure { flex: 1 1 520px; max-width: 640px; }
details { margin: 0.4rem 0; } summary { cursor: pointer; }
.note { font-size: 0.85rem; color: #555; }
.headline { font-size: 1.05rem; font-weight: 600; }
"""


@dataclass
class ReportInputs:
    """What the report is made of.

    out: the bench folder (the page goes to ``out/report.html``, images to ``out/report/``).
    title: the page heading; setup: the budget / machine / command lines (Markdown-style
    inline code in backticks). summary, runs: as ``constcl.benchmark`` makes them (values in
    [0, 1]). tasks: task -> its columns, in order. plots: the evaluation PNGs to list at the
    end (paths under ``out``; DAVIS mask files are skipped).
    """

    out: Path
    title: str
    setup: list[str]
    summary: list[dict]
    runs: list[dict]
    tasks: dict[str, list[str]]
    plots: list[Path] = field(default_factory=list)
    random_name: str = "random init"


def eval_folder(out: Path, encoder: str, branch: str, seed: int, task: str) -> Path:
    """Where the bench writes one evaluation (see the module docstring)."""
    return out / "eval" / f"{encoder.replace(' ', '_')}-{branch}-s{seed}" / task


def _inline(text: str) -> str:
    """Escape ``text`` and turn `code` spans into <code> elements."""
    parts = re.split(r"`([^`]*)`", text)
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p)
                   for i, p in enumerate(parts))


def _src(path: Path, out: Path) -> str:
    return html.escape(quote(Path(os.path.relpath(path, out)).as_posix()), quote=True)


def _figure(path: Path | None, out: Path, caption: str, alt: str) -> str:
    if path is None or not path.is_file():
        return ""
    return (f'<figure><img src="{_src(path, out)}" alt="{html.escape(alt, quote=True)}" '
            f'loading="lazy"><figcaption>{html.escape(caption)}</figcaption></figure>')


def _pct(value: float | None, std: float | None = None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    text = f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"
    return text + ("" if std is None else f" ± {100 * std:.1f}")


def _separated(flag: bool | None) -> str:
    if flag is None:
        return ""
    return (' <span class="yes">(beyond seed spread)</span>' if flag
            else ' <span class="no">(within seed spread)</span>')


def headline(verdicts: list[charts.Verdict]) -> str:
    """One sentence: who is best on how many metrics, and how many of those leads exceed the
    seed spread."""
    if not verdicts:
        return "No metric has a value."
    wins: dict[str, int] = {}
    for v in verdicts:
        wins[v.best] = wins.get(v.best, 0) + 1
    ranked = sorted(wins.items(), key=lambda kv: -kv[1])
    leaders = "; ".join(f"{name} on {n}" for name, n in ranked)
    clear = sum(v.separated_next is True for v in verdicts)
    known = sum(v.separated_next is not None for v in verdicts)
    spread = (f"{clear} of these {known} leads over the runner-up exceed the seed spread."
              if known else "One seed: no spread to judge the leads by.")
    return f"Best of {len(verdicts)} metrics: {leaders}. {spread}"


def _glance(inputs: ReportInputs) -> str:
    rows, verdicts = [], []
    for task, columns in inputs.tasks.items():
        for column in columns:
            v = charts.verdict(column, inputs.summary, inputs.random_name)
            if v is None:
                continue
            verdicts.append(v)
            random_is_best = v.gap_random is None and v.best.startswith(inputs.random_name)
            vs_random = ("(is the best)" if random_is_best else
                         _pct(v.gap_random, signed=True) + _separated(v.separated_random))
            rows.append(
                f'<tr><td class="name">{html.escape(task)}</td><td class="name">'
                f'{html.escape(column)}</td><td class="name"><b>{html.escape(v.best)}</b></td>'
                f"<td>{_pct(v.mean, v.std)}</td><td class=\"name\">"
                f"{html.escape(v.runner_up or '')}</td>"
                f"<td>{_pct(v.gap_next, signed=True)}{_separated(v.separated_next)}</td>"
                f"<td>{vs_random}</td></tr>")
    seeds = sorted({r["seed"] for r in inputs.runs})
    head = "".join(f"<th>{t}</th>" for t in ("task", "metric", "best", "mean ± std (%)",
                                             "runner-up", "best − runner-up (points)",
                                             f"best − {html.escape(inputs.random_name)}"))
    return (f'<p class="headline">{html.escape(headline(verdicts))}</p>'
            f'<div class="table-wrap"><table><tr>{head}</tr>{"".join(rows)}</table></div>'
            f'<p class="note">Over {len(seeds)} training seed(s) ({", ".join(map(str, seeds))})'
            ". A margin is called beyond the seed spread when it exceeds the sum of the two "
            "standard deviations: a rough rule with so few seeds, not a significance test. "
            "With one seed there is no spread to compare.</p>")


def _numbers(inputs: ReportInputs) -> str:
    columns = [c for cs in inputs.tasks.values() for c in cs]
    best = {c: max((r["mean"][c] for r in inputs.summary if r["mean"].get(c) is not None),
                   default=None) for c in columns}
    head = "".join(f"<th>{html.escape(t)}</th>" for t in ["encoder", "branch", *columns])
    body = ""
    for r in inputs.summary:
        cells = "".join(
            ('<td class="best">' if r["mean"].get(c) is not None and r["mean"][c] == best[c]
             else "<td>") + f'{_pct(r["mean"].get(c), r["std"].get(c))}</td>' for c in columns)
        body += (f'<tr><td class="name">{html.escape(r["encoder"])}</td><td class="name">'
                 f'{html.escape(r["branch"])}</td>{cells}</tr>')
    head_seed = "".join(f"<th>{html.escape(t)}</th>"
                        for t in ["encoder", "branch", "seed", *columns])
    seed_rows = "".join(
        f'<tr><td class="name">{html.escape(r["encoder"])}</td><td class="name">'
        f'{html.escape(r["branch"])}</td><td>{r["seed"]}</td>'
        + "".join(f'<td>{_pct(r["values"].get(c))}</td>' for c in columns) + "</tr>"
        for r in inputs.runs)
    return (f'<div class="table-wrap"><table><tr>{head}</tr>{body}</table></div>'
            '<p class="note">All numbers in %, mean ± standard deviation over seeds; the best '
            'mean of each column is highlighted.</p><details><summary>Every seed</summary>'
            f'<div class="table-wrap"><table><tr>{head_seed}</tr>{seed_rows}</table></div>'
            "</details>")


def _panel_rows(inputs: ReportInputs, task: str, seed: int) -> list[panels.Panel]:
    return [panels.Panel(charts.label(r["encoder"], r["branch"]), r["encoder"],
                         eval_folder(inputs.out, r["encoder"], r["branch"], seed, task))
            for r in inputs.summary]


def telling_sequences(rows: list[panels.Panel], key: str, count: int = 2) -> list[str]:
    """The ``count`` sequences whose per-sequence ``key`` score differs most between the
    encoders (range over the rows' ``results.json``), ties in file order."""
    scores: dict[str, list[float]] = {}
    for row in rows:
        path = row.folder / "results.json"
        if path.is_file():
            for name, values in json.loads(path.read_text()).get("per_sequence", {}).items():
                if isinstance(values.get(key), int | float):
                    scores.setdefault(name, []).append(float(values[key]))
    ranked = sorted(scores, key=lambda n: -(max(scores[n]) - min(scores[n])))
    return ranked[:count]


def _qualitative(inputs: ReportInputs, task: str, seed: int, folder: Path) -> list[str]:
    """Figures (HTML) of the qualitative panels of one task, drawn from seed ``seed``."""
    rows = _panel_rows(inputs, task, seed)
    out, figures = inputs.out, []
    note = f"seed {seed}; one row per encoder / branch"
    picked = "one of the 2 sequences where the encoders' scores differ most"
    try:
        if task == "track":
            for name in telling_sequences(rows, "success_auc"):
                png = panels.tracking_panel(rows, name,
                                            folder / f"track_{panels.file_stem(name)}.png")
                figures.append(_figure(png, out, f"Tracking {name} ({note}; {picked})",
                                       f"tracking {name}"))
        elif task == "propagate":
            for name in telling_sequences(rows, "J&F-Mean"):
                png = panels.propagation_panel(
                    rows, name, folder / f"propagate_{panels.file_stem(name)}.png")
                figures.append(_figure(png, out, f"Propagation {name} ({note}; {picked})",
                                       f"propagation {name}"))
        elif task == "detect":
            png = panels.detection_panel(rows, folder / "detect_key_frames.png")
            figures.append(_figure(png, out, f"Detection on validation key frames (seed {seed}; "
                                   "one column per encoder / branch)", "detection key frames"))
        else:  # classify / kNN: the task's own plot of each encoder, side by side
            own = {"classify": "confusion.png", "knn": "recall_at_k.png"}.get(task)
            gallery = "".join(_figure(r.folder / own, out, f"{r.title} (seed {seed})", r.title)
                              for r in rows if own)
            if gallery:
                figures.append(f'<div class="gallery">{gallery}</div>')
    except (OSError, ValueError, KeyError) as err:  # a missing or odd input: report, go on
        log.warning("report: no qualitative panel for %s: %s", task, err)
        figures.append(f'<p class="note">No qualitative panel: {html.escape(str(err))}</p>')
    figures = [f for f in figures if f]
    if task in ("track", "propagate") and figures:  # two sequences side by side
        return [f'<div class="gallery wide">{"".join(figures)}</div>']
    return figures


def _curves(inputs: ReportInputs, folder: Path) -> str:
    curves = {}
    for run_dir in sorted((inputs.out / "runs").glob("*-s*")):
        variant, _, seed = run_dir.name.rpartition("-s")
        metrics = run_dir / "metrics.jsonl"
        if metrics.is_file() and seed.isdigit():
            curves[(variant, int(seed))] = charts.read_metrics(metrics)
    pngs = charts.curve_figures(curves, folder)
    if not pngs:
        return '<p class="note">No pretraining metrics found under runs/.</p>'
    captions = {
        "curves_losses": "Global loss, region loss and contrastive accuracy (colour = variant, "
                         "line style = seed).",
        "curves_mechanism": "Is the local mechanism working? The decoder's attention entropy "
                            "relative to log N (1.0 = uniform: the context is the other view's "
                            "mean), how often a translated box is closest to its partner among "
                            "its own video's boxes (with that choice's chance level), and the "
                            "region loss's own contrastive accuracy.",
        "curves_update_ratio": "Relative update size |Δw| / |w| per step of each model part "
                               "(log scale, shared axis), where logged; zeros (a step at "
                               "learning rate 0) are left out."}
    return "".join(_figure(p, inputs.out, captions.get(p.stem, ""), p.stem) for p in pngs)


def _all_plots(inputs: ReportInputs) -> str:
    groups: dict[str, list[Path]] = {}
    for p in inputs.plots:
        rel = Path(os.path.relpath(p, inputs.out))
        if "masks" in rel.parts or not p.is_file():
            continue
        groups.setdefault(rel.parts[1] if len(rel.parts) > 2 else str(rel.parent), []).append(p)
    blocks = "".join(
        f"<details><summary>{html.escape(name)} ({len(ps)} plots)</summary>"
        '<div class="gallery">'
        + "".join(_figure(p, inputs.out, os.path.relpath(p, inputs.out), p.stem) for p in ps)
        + "</div></details>" for name, ps in groups.items())
    return blocks or '<p class="note">No evaluation plots.</p>'


def write_report(inputs: ReportInputs) -> Path:
    """Draw the charts and panels into ``out/report/`` and write ``out/report.html``."""
    out = inputs.out
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    seed = min((r["seed"] for r in inputs.runs), default=0)
    columns = [c for cs in inputs.tasks.values() for c in cs]
    overview = charts.overview_figure(columns, inputs.summary, inputs.random_name)
    glance = _glance(inputs)
    if overview is not None:
        png = charts.save_figure(overview, folder / "overview.png")
        glance += _figure(png, out, f"All metrics relative to {inputs.random_name} "
                          "(mean over seeds; hatched = local branch)", "overview")
    sections = [("glance", "At a glance", glance)]
    for task, columns in inputs.tasks.items():
        chart = charts.comparison_chart(task, columns, inputs.summary, inputs.runs,
                                        folder / f"compare_{panels.file_stem(task)}.png")
        body = _figure(chart, out, f"{task}: every encoder and branch, mean ± std over seeds",
                       f"{task} comparison")
        body += "".join(_qualitative(inputs, task, seed, folder))
        sections.append((f"task-{task}", f"Task: {task}", body))
    sections.append(("numbers", "Numbers", _numbers(inputs)))
    sections.append(("curves", "Pretraining curves", _curves(inputs, folder)))
    sections.append(("plots", "All evaluation plots", _all_plots(inputs)))
    nav = "".join(f'<li><a href="#{i}">{html.escape(t)}</a></li>' for i, t, _ in sections)
    setup = "".join(f'<p class="setup">{_inline(line)}</p>' for line in inputs.setup)
    body = "".join(f'<section id="{i}"><h2>{html.escape(t)}</h2>{b}</section>'
                   for i, t, b in sections)
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(inputs.title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{html.escape(inputs.title)}</h1>{setup}</header>"
            f"<nav><ul>{nav}</ul></nav><main>{body}</main></body></html>\n")
    path = out / "report.html"
    path.write_text(page)
    return path
