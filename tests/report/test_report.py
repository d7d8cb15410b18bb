"""The bench report: strict HTML, linked files, numbers and panels from known inputs."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
from matplotlib.patches import Rectangle
from PIL import Image

from constcl.eval.detect.data import find_ava_files
from constcl.eval.metrics.ava_map import read_ava_groundtruth_csv
from constcl.eval.propagate.data import load_sequences as davis_sequences
from constcl.eval.track.data import load_sequences as otb_sequences
from constcl.report import ReportInputs, write_report
from constcl.report.charts import Verdict, comparison_figure, overview_figure, verdict
from constcl.report.page import eval_folder, headline, telling_sequences
from constcl.report.panels import Panel, predicted_labels
from tests.eval.synth_world_fixture import small_world
from tests.report.html_check import check_page

TASKS = {"classify": ["linear top-1"], "detect": ["AVA-style mAP"],
         "track": ["OTB precision@20", "OTB success AUC"], "propagate": ["DAVIS J&F"]}
COLUMNS = [c for cs in TASKS.values() for c in cs]
# (encoder, branch) -> per-seed value of every column
VALUES = {("random init", "global"): (0.10, 0.12), ("cvrl", "global"): (0.40, 0.50),
          ("constcl", "global"): (0.70, 0.90), ("constcl", "local"): (0.55, 0.65)}


def _runs() -> list[dict]:
    return [{"encoder": e, "branch": b, "seed": s, "values": {c: v for c in COLUMNS}}
            for (e, b), vs in VALUES.items() for s, v in enumerate(vs)]


def _summary() -> list[dict]:
    return [{"encoder": e, "branch": b, "seeds": [0, 1],
             "mean": {c: statistics.fmean(vs) for c in COLUMNS},
             "std": {c: statistics.stdev(vs) for c in COLUMNS}} for (e, b), vs in VALUES.items()]


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _fake_eval(out: Path, world: Path, encoder: str, branch: str) -> None:
    """Task outputs of one encoder (seed 0) in the bench layout, from the world's truth."""
    seq = otb_sequences(world / "otb")[0]
    track = eval_folder(out, encoder, branch, 0, "track")
    (track / "boxes").mkdir(parents=True)
    np.savetxt(track / "boxes" / f"{seq.name}.txt", seq.boxes + 3.0, fmt="%.3f", delimiter=",")
    _write_json(track / "results.json", {"data": str(world / "otb"),
                                         "per_sequence": {seq.name: {"success_auc": 0.5}}})
    dseq = davis_sequences(world)[0]
    prop = eval_folder(out, encoder, branch, 0, "propagate")
    (prop / "masks" / dseq.name).mkdir(parents=True)
    for a in dseq.annotations:
        shutil.copy(a, prop / "masks" / dseq.name / a.name)
    _write_json(prop / "results.json", {"data": str(world), "split": "val",
                                        "per_sequence": {dseq.name: {"J&F-Mean": 0.6}}})
    det = eval_folder(out, encoder, branch, 0, "detect")
    det.mkdir(parents=True)
    rows = read_ava_groundtruth_csv(find_ava_files(world).val)[:6]
    (det / "predictions.csv").write_text("".join(
        f"{v},{t:04d},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},{c},0.9\n"
        for v, t, x1, y1, x2, y2, c, _ in rows))
    _write_json(det / "results.json", {"data": str(world), "clip": {"fps": None,
                                                                     "time_offset": 0},
                                       "metrics": {"map": 0.3}})
    cls = eval_folder(out, encoder, branch, 0, "classify")
    cls.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 20, 20)).save(cls / "confusion.png")


def _fake_runs(out: Path) -> None:
    for variant in ("cvrl", "constcl"):
        run = out / "runs" / f"{variant}-s0"
        run.mkdir(parents=True)
        rows = [{"step": s, "loss_global": 7.0 - 0.1 * s, "global_accuracy": 0.01 * s,
                 "update_ratio_trunk": 0.01 / s, "update_ratio_global_head": 0.02 / s}
                for s in (10, 20, 30)]
        rows[-1]["update_ratio_trunk"] = 0.0  # the last step at lr 0: not drawable on a log axis
        if variant == "constcl":
            for r in rows:
                r["loss_region"], r["update_ratio_region_head"] = 4.5, 0.001
                r["attn_entropy"], r["region_match_accuracy"] = 0.99, 0.3
        lines = [json.dumps(r) for r in rows] + ['{"step": 40, "loss_glo']  # a cut last line
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    world = small_world(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("bench")
    for encoder, branch in VALUES:
        _fake_eval(out, world, encoder, branch)
    _fake_runs(out)
    mask = eval_folder(out, "cvrl", "global", 0, "propagate") / "masks" / "x" / "00000.png"
    mask.parent.mkdir(parents=True)
    Image.new("P", (8, 8)).save(mask)
    plots = [eval_folder(out, "cvrl", "global", 0, "classify") / "confusion.png", mask]
    setup = ["Date 2026-12-03; machine: CPU (x86_64, 2 cores); whole bench 1.0 min.",
             "Command: `constcl bench --steps 30 <tiny>`", "Budget: 30 pretraining steps x 16"]
    return write_report(ReportInputs(out=out, title="Results: test & bench", setup=setup,
                                     summary=_summary(), runs=_runs(), tasks=TASKS,
                                     plots=plots))


def test_report_is_strict_html_and_every_link_resolves(report):
    checker = check_page(report)
    images = {link for kind, link in checker.links if kind == "img"}
    assert "eval/cvrl-global-s0/classify/confusion.png" in images
    assert not any("/masks/" in link for link in images)  # raw DAVIS masks are not shown
    for name in ("compare_classify", "compare_detect", "compare_track", "compare_propagate",
                 "curves_losses", "curves_mechanism", "curves_update_ratio",
                 "detect_key_frames", "overview"):
        assert f"report/{name}.png" in images
    assert any(link.startswith("report/track_") for link in images)
    assert any(link.startswith("report/propagate_") for link in images)
    text = report.read_text()
    assert "<code>constcl bench --steps 30 &lt;tiny&gt;</code>" in text  # set-up as text
    assert "Results: test &amp; bench" in text


def test_glance_table_gives_best_and_margins_from_the_numbers(report):
    text = report.read_text()
    # constcl/global 0.8 +- 0.141; runner-up constcl/local 0.6 +- 0.071 -> +20.0 points, and
    # 0.2 < 0.141 + 0.071 is false (0.212): within the spread; random init 0.11 +- 0.014
    assert "<b>constcl / global</b></td><td>80.0 ± 14.1</td>" in text
    assert "+20.0 <span class=\"no\">(within seed spread)</span>" in text
    assert "+69.0 <span class=\"yes\">(beyond seed spread)</span>" in text
    assert text.count('<td class="best">80.0 ± 14.1</td>') == len(COLUMNS)


def test_verdict_by_hand():
    summary = _summary()
    v = verdict("DAVIS J&F", summary)
    assert (v.best, v.runner_up) == ("constcl / global", "constcl / local")
    assert v.gap_next == pytest.approx(0.2) and v.separated_next is False
    assert v.gap_random == pytest.approx(0.69) and v.separated_random is True
    one_seed = [dict(r, std={c: None for c in COLUMNS}) for r in summary]
    assert verdict("DAVIS J&F", one_seed).separated_next is None
    assert verdict("missing", summary) is None


def test_comparison_bars_and_error_bars_are_the_means_and_stds():
    fig = comparison_figure("track", TASKS["track"], _summary(), _runs())
    for ax in fig.axes:
        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert [b.get_height() for b in bars] == pytest.approx(
            [100 * statistics.fmean(v) for v in VALUES.values()])
        spans = [np.ptp(seg[:, 1]) for coll in ax.collections if hasattr(coll, "get_segments")
                 for seg in map(np.asarray, coll.get_segments())]
        assert sorted(spans) == pytest.approx(sorted(200 * statistics.stdev(v)
                                                     for v in VALUES.values()))
        dots = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections
                               if not hasattr(c, "get_segments")])
        assert sorted(dots) == pytest.approx(sorted(100 * x for v in VALUES.values() for x in v))


def test_predicted_label_is_the_top_scored_class(tmp_path):
    csv = tmp_path / "predictions.csv"
    csv.write_text("v,0001,0.100,0.100,0.500,0.500,1,0.2\nv,0001,0.100,0.100,0.500,0.500,2,0.7\n"
                   "v,0001,0.100,0.100,0.500,0.500,3,0.1\nv,0002,0.2,0.2,0.4,0.4,1,0.9\n"
                   "v,0002,0.2,0.2,0.4,0.4,3,0.95\n")
    assert predicted_labels(csv) == {("v", 1, (0.1, 0.1, 0.5, 0.5)): (2, 0.7),
                                     ("v", 2, (0.2, 0.2, 0.4, 0.4)): (3, 0.95)}


def test_a_bench_without_eval_outputs_still_gets_a_page(tmp_path):
    page = write_report(ReportInputs(out=tmp_path, title="t", setup=[], summary=_summary(),
                                     runs=_runs(), tasks=TASKS))
    check_page(page)
    assert "No pretraining metrics" in page.read_text()


def test_panels_show_the_sequences_where_encoders_differ_most(tmp_path):
    scores = {"r1": {"s1": 0.5, "s2": 0.1, "s3": 0.4}, "r2": {"s1": 0.6, "s2": 0.9, "s3": 0.0}}
    rows = []
    for name, per_seq in scores.items():
        _write_json(tmp_path / name / "results.json",
                    {"per_sequence": {s: {"J&F-Mean": v} for s, v in per_seq.items()}})
        rows.append(Panel(name, "cvrl", tmp_path / name))
    rows.append(Panel("missing", "cvrl", tmp_path / "nothing"))
    # ranges: s1 0.1, s2 0.8, s3 0.4
    assert telling_sequences(rows, "J&F-Mean") == ["s2", "s3"]
    assert telling_sequences(rows, "J&F-Mean", count=3) == ["s2", "s3", "s1"]


def test_report_and_viz_do_not_import_the_command_layer():
    from tests.test_layering import SRC, imported_modules

    for path in [*(SRC / "report").glob("*.py"), *(SRC / "viz").glob("*.py")]:
        bad = {m for m in imported_modules(path) if m.startswith(("constcl.commands",
                                                                  "constcl.cli"))}
        assert bad == set(), path


def test_headline_counts_wins_and_clear_leads():
    def v(best, separated):
        return Verdict("c", best, 0.5, 0.1, "x", 0.1, separated, 0.2, True)

    text = headline([v("constcl / global", True), v("cvrl / global", False),
                     v("constcl / global", False)])
    assert text == ("Best of 3 metrics: constcl / global on 2; cvrl / global on 1. 1 of these "
                    "3 leads over the runner-up exceed the seed spread.")
    assert "One seed" in headline([v("cvrl / global", None)])


def test_overview_bars_are_differences_to_random_init():
    fig = overview_figure(["DAVIS J&F"], _summary())
    ax = fig.axes[0]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    base = VALUES[("random init", "global")]
    others = [v for k, v in VALUES.items() if k[0] != "random init"]
    assert [b.get_height() for b in bars] == pytest.approx(
        [100 * (statistics.fmean(v) - statistics.fmean(base)) for v in others])
    spans = sorted(np.ptp(np.asarray(seg)[:, 1]) for coll in ax.collections
                   for seg in coll.get_segments())
    assert spans == pytest.approx(sorted(
        200 * math.hypot(statistics.stdev(v), statistics.stdev(base)) for v in others))
    assert overview_figure(["DAVIS J&F"], _summary()[1:]) is None  # no random-init row
