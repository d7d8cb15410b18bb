"""The bench's summary over seeds and its written tables (the pretraining and evaluation it
drives are covered by the engine and eval tests)."""

import json
import statistics

import pytest

from constcl.benchmark import COLUMNS, Budget, summarise, write_results


def run(encoder, branch, seed, value):
    return {"encoder": encoder, "branch": branch, "seed": seed,
            "values": {c: value for c in COLUMNS}}


def test_summary_is_mean_and_sample_std_over_seeds():
    runs = [run("cvrl", "global", s, v) for s, v in ((0, 0.2), (1, 0.4), (2, 0.9))]
    runs.append(run("random init", "global", 0, 0.1))
    runs[0]["values"][COLUMNS[0]] = None  # a missing metric is left out of its column only
    rows = {(r["encoder"], r["branch"]): r for r in summarise(runs)}
    cvrl = rows[("cvrl", "global")]
    assert cvrl["seeds"] == [0, 1, 2]
    assert cvrl["mean"][COLUMNS[1]] == pytest.approx(0.5)
    assert cvrl["std"][COLUMNS[1]] == pytest.approx(statistics.stdev([0.2, 0.4, 0.9]))
    assert cvrl["mean"][COLUMNS[0]] == pytest.approx(0.65)  # (0.4 + 0.9) / 2
    assert rows[("random init", "global")]["std"][COLUMNS[0]] is None  # one seed: no spread


def test_results_table_and_report(tmp_path):
    runs = [run("random init", "global", s, 0.125) for s in (0, 1)]
    runs += [run("constcl", "local", 0, 0.5), run("constcl", "local", 1, 0.7)]
    plot = tmp_path / "eval" / "x" / "track" / "success_plots.png"
    plot.parent.mkdir(parents=True)
    plot.write_bytes(b"png")
    budget = Budget(steps=10, videos=24, backbone="r3d_tiny", frames=8, size=32, batch=4,
                    seeds=(0, 1))
    write_results(tmp_path, runs, budget, 1.5, [plot], "constcl bench --steps 10")
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| random init | global | " + " | ".join(["12.5 ± 0.0"] * len(COLUMNS)) + " |" in text
    assert "| constcl | local | " + " | ".join(["60.0 ± 14.1"] * len(COLUMNS)) + " |" in text
    assert "| constcl | local | 1 | " + " | ".join(["70.0"] * len(COLUMNS)) + " |" in text
    assert "10 pretraining steps x 4 videos" in text and "seeds 0,1" in text
    assert "`constcl bench --steps 10`" in text
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["budget"]["seeds"] == [0, 1] and len(saved["runs"]) == 4
    report = (tmp_path / "report.html").read_text()
    assert "eval/x/track/success_plots.png" in report and "<table" in report


@pytest.mark.parametrize("task", ["classify", "knn", "detect", "track", "propagate"])
def test_every_task_gets_valid_settings_of_its_own_runner(task, tmp_path):
    """The bench builds each task's typed settings itself (no command line in between): the
    settings must be the runner's own class and carry the budget and the encoder."""
    from constcl import benchmark
    from constcl.eval import classify, detect, propagate, track

    b = Budget(frames=8, size=112, otb_sequences=3, davis_sequences=2)
    encoder = {"checkpoint": "random", "backbone": "r3d_tiny", "branch": "local", "seed": 4}
    folder = tmp_path / "eval" / "x" / task
    s = benchmark.task_settings(task, encoder, tmp_path / "world", b, folder)
    module = {"classify": classify, "knn": classify, "detect": detect, "track": track,
              "propagate": propagate}[task]
    assert type(s) is module.Settings and benchmark.RUNNERS[task] is module.run
    assert (s.checkpoint, s.backbone, s.branch, s.seed, s.out) == ("random", "r3d_tiny", "local",
                                                                    4, folder)
    if task in ("classify", "knn", "detect"):
        assert (s.frames, s.size) == (8, 112)
    if task == "knn":
        assert s.mode == "knn" and s.cache_dir == tmp_path / "eval" / "x" / "classify" / "cache"
    if task in ("track", "propagate"):
        assert s.stage == "res5"
        assert s.sequences == (3 if task == "track" else 2)


class _Calls(list):
    evaluated: list


def _fake_bench(monkeypatch, calls):
    """run_bench with pretraining and evaluation replaced by recorders (their own tests cover
    them): each evaluation's numbers are its seed / 10, so reused ones can be told apart."""
    from constcl import benchmark

    monkeypatch.setattr(benchmark, "generate_world", lambda *a, **k: None)
    monkeypatch.setattr(benchmark, "generate_local_sets", lambda *a, **k: None)
    monkeypatch.setattr(benchmark, "pretrain_variant",
                        lambda variant, seed, world, out, b, name=None:
                        calls.append(("pretrain", variant, seed) + ((b.steps,) if name and "-n"
                                                                    in name else ()))
                        or f"ckpt-{variant}-{seed}")
    def evaluate(name, ckpt, branch, seed, world, out, b, tasks=benchmark.TASKS, tag=""):
        calls.append(("eval", name, branch, seed) + ((tag,) if tag else ()))
        evaluated.append(tasks)
        titles = [title for task in tasks for title, _ in benchmark.HEADLINES[task]]
        # the OTB columns read the OTB sequence count too, so a re-evaluation shows
        return {c: seed / 10 + (b.otb_sequences / 1000 if c.startswith("OTB") else 0)
                for c in titles}

    evaluated = calls.evaluated = []  # the tasks of each evaluation, in order
    monkeypatch.setattr(benchmark, "evaluate", evaluate)
    monkeypatch.setattr(benchmark, "write_report", lambda inputs: None)
    return benchmark


def test_rerun_with_more_seeds_evaluates_only_the_new_ones(monkeypatch, tmp_path):
    calls = _Calls()
    benchmark = _fake_bench(monkeypatch, calls)
    b = Budget(steps=10, seeds=(0,), variants=("cvrl", "constcl"))
    benchmark.run_bench(b, tmp_path)
    assert ("pretrain", "constcl", 0) in calls and len(calls) == 2 + 4  # 2 runs, 4 evaluations
    first = (tmp_path / "RESULTS.md").read_text()
    assert "whole bench" in first and "reused" not in first
    calls.clear()
    runs = benchmark.run_bench(Budget(steps=10, seeds=(0, 1), variants=("cvrl", "constcl")),
                               tmp_path)
    assert all(c[-1] == 1 for c in calls) and len(calls) == 6  # nothing of seed 0 again
    assert [r["reused"] for r in runs if r["seed"] == 0] == [True] * 4
    assert [r["reused"] for r in runs if r["seed"] == 1] == [False] * 4
    text = (tmp_path / "RESULTS.md").read_text()
    assert "4 of 8 evaluations were reused whole from its runs.jsonl" in text
    assert "| cvrl | global | 5.0 ± 7.1 |" in text  # seeds 0 and 1 read 0.0 and 10.0
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(x)["budget"]["steps"] == 10 for x in lines)


def test_rerun_with_another_evaluation_setting_evaluates_only_that_task(monkeypatch, tmp_path):
    calls = _Calls()
    benchmark = _fake_bench(monkeypatch, calls)
    benchmark.run_bench(Budget(steps=10, seeds=(0,), variants=("constcl",), otb_sequences=4),
                        tmp_path)
    assert calls.evaluated == [benchmark.TASKS] * 3  # random, constcl global and local
    calls.clear(), calls.evaluated.clear()
    b = Budget(steps=10, seeds=(0,), variants=("constcl",), otb_sequences=8)
    runs = benchmark.run_bench(b, tmp_path)
    # the finished pretraining run is asked for its weights (a resume), then only OTB runs
    assert ("pretrain", "constcl", 0) in calls and calls.evaluated == [("track",)] * 3
    assert [r["reevaluated"] for r in runs] == [["track"]] * 3
    assert not any(r["reused"] for r in runs)
    for r in runs:  # OTB columns from this call (0.008), the rest kept from the first (0.0)
        assert {c: v for c, v in r["values"].items() if v} == {
            "OTB precision@20": 0.008, "OTB success AUC": 0.008}
        assert set(r["values"]) == set(COLUMNS) and set(r["task_times"]) == set(benchmark.TASKS)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "0 of 3 evaluations were reused whole" in text
    assert "3 had only track evaluated again by this call" in text
    assert "; 8 OTB targets spread evenly over the list sorted by name, the first 64 DAVIS" in text
    lines = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [x["budget"]["otb_sequences"] for x in lines] == [4] * 3 + [8] * 3
    calls.clear()
    runs = benchmark.run_bench(b, tmp_path)  # the same again: nothing to do
    assert calls == [] and all(r["reused"] and not r["reevaluated"] for r in runs)
    assert "3 of 3 evaluations were reused whole" in (tmp_path / "RESULTS.md").read_text()


def test_rerun_with_another_budget_is_refused(monkeypatch, tmp_path):
    benchmark = _fake_bench(monkeypatch, _Calls())
    benchmark.run_bench(Budget(steps=10, seeds=(0,), variants=("cvrl",)), tmp_path)
    with pytest.raises(ValueError, match=r"steps 10 there, 20 now.*new --out"):
        benchmark.run_bench(Budget(steps=20, seeds=(0,), variants=("cvrl",)), tmp_path)
    legacy = tmp_path / "old"
    legacy.mkdir()
    (legacy / "runs.jsonl").write_text(json.dumps({"encoder": "cvrl", "branch": "global",
                                                   "seed": 0, "values": {}}) + "\n")
    with pytest.raises(ValueError, match="records no budget"):
        benchmark.run_bench(Budget(steps=10, seeds=(0,), variants=("cvrl",)), legacy)


def test_paired_differences_by_seed_hand_computed(tmp_path):
    from constcl.benchmark import paired_differences

    runs = [run("random init", "global", s, v) for s, v in ((0, 0.1), (1, 0.2), (2, 0.3))]
    runs += [run("cvrl", "global", s, v) for s, v in ((0, 0.2), (1, 0.2), (2, 0.5))]
    runs += [run("constcl", "local", s, v) for s, v in ((0, 0.3), (1, 0.1), (2, 0.6))]
    runs.append(run("region", "global", 7, 0.9))  # shares no seed: no row
    rows = {(r["row"], r["baseline"][0]): r["column"] for r in paired_differences(runs)}
    assert set(rows) == {(("cvrl", "global"), "random init"),
                         (("constcl", "local"), "random init"), (("constcl", "local"), "cvrl")}
    mean, se, n, ahead = rows[(("cvrl", "global"), "random init")][COLUMNS[0]]
    # differences 0.1, 0.0, 0.2: mean 0.1, sample sd 0.1, standard error 0.1 / sqrt(3)
    assert (mean, se, n, ahead) == (pytest.approx(0.1), pytest.approx(0.1 / 3 ** 0.5), 3, 2)
    mean, se, n, ahead = rows[(("constcl", "local"), "cvrl")][COLUMNS[0]]
    # differences 0.1, -0.1, 0.1: mean 1/30, sample sd sqrt(0.04 / 3)
    se_hand = (0.04 / 3) ** 0.5 / 3 ** 0.5
    assert (mean, se, n, ahead) == (pytest.approx(1 / 30), pytest.approx(se_hand), 3, 2)
    budget = Budget(steps=10, videos=24, backbone="r3d_tiny", seeds=(0, 1, 2))
    write_results(tmp_path, runs[:9], budget, 1.0, [], "constcl bench")
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| cvrl, global | random init | " + " | ".join(["+10.0 ± 5.8 (2/3)"] * len(COLUMNS)) \
        in text


def test_records_of_the_older_first_n_otb_pick_are_evaluated_again():
    from constcl import benchmark

    want = benchmark.run_budget(Budget())
    full = {c: 0.5 for c in COLUMNS}
    older = {k: v for k, v in want.items() if k != "otb_subset"}
    assert benchmark.stale_tasks({"budget": older, "values": full}, want) == ("track",)
    assert benchmark.stale_tasks({"budget": want, "values": full}, want) == ()
    missing = {c: v for c, v in full.items() if c != "DAVIS J&F"}
    assert benchmark.stale_tasks({"budget": want, "values": missing}, want) == ("propagate",)
    assert benchmark.stale_tasks(None, want) == benchmark.TASKS


def test_evaluate_deletes_the_davis_feature_cache_and_keeps_the_classification_one(
        monkeypatch, tmp_path):
    from constcl import benchmark

    def fake_run(settings):  # writes a cache where the real task would
        cache = settings.cache_dir or settings.out / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "features.npz").write_bytes(b"x")
        return {"metrics": {}}

    monkeypatch.setattr(benchmark, "RUNNERS", dict.fromkeys(benchmark.TASKS, fake_run))
    values = benchmark.evaluate("random_init", "random", "global", 0, tmp_path / "world",
                                tmp_path, Budget(), ("classify", "propagate"))
    assert values == {"linear top-1": None, "DAVIS J&F": None}
    folder = tmp_path / "eval" / "random_init-global-s0"
    assert (folder / "classify" / "cache" / "features.npz").exists()
    assert not (folder / "propagate" / "cache").exists()
    assert (folder / "propagate").is_dir()


def test_budget_scaling_runs_each_budget_and_writes_its_section(monkeypatch, tmp_path):
    calls = _Calls()
    benchmark = _fake_bench(monkeypatch, calls)
    # the local mechanism's statistics come from the runs' metrics.jsonl: the mean of the last
    # MECHANISM_TAIL (5) logged rows; here 0.9 at 10 steps and 0.5 at 20 steps for seed 0
    for name, entropy in (("constcl-s0", 0.9), ("constcl-s0-n20", 0.5)):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        rows = [{"step": i, "attn_entropy": 1.0 if i < 3 else entropy,
                 "region_match_accuracy": 0.25, "region_match_chance": 0.125}
                for i in range(8)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    b = Budget(steps=10, seeds=(0, 1), variants=("cvrl", "constcl", "supervised"),
               scaling_steps=(20,))
    out = benchmark.run_bench(b, tmp_path)
    assert ("pretrain", "constcl", 1, 20) in calls and ("pretrain", "cvrl", 0, 20) in calls
    assert not any(c[:2] == ("pretrain", "supervised") and len(c) == 4 for c in calls)
    assert ("eval", "constcl", "local", 0, "-n20") in calls
    assert len([r for r in out if r["steps"] == 20]) == 2 * 3  # cvrl + constcl's 2 branches
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Budget scaling" in text and "scaling/scaling.png" in text
    assert (tmp_path / "scaling" / "scaling.png").is_file()
    row = next(x for x in text.splitlines() if x.startswith("| 20 | constcl | local | 2 |"))
    assert "0.5000" in row and "25.0 (12.5)" in row  # seed 1 has no metrics: seed 0 only
    assert "| 20 | constcl local - cvrl |" in text
    calls.clear()
    benchmark.run_bench(b, tmp_path)  # everything recorded: nothing runs again
    assert calls == []


def test_supervised_reference_trains_on_the_train_split_only(tmp_path):
    from constcl import benchmark

    world = tmp_path / "world"
    world.mkdir()
    (world / "videos.csv").write_text(
        "video_id,path,label,class_name,split,num_objects\n"
        "a,videos/B/a.mp4,1,B,train,2\nb,videos/A/b.mp4,0,A,val,2\n"
        "c,videos/A/c.mp4,0,A,train,3\n")
    path = benchmark.train_split_source(world, tmp_path)
    assert path.read_text() == (f"path,label\n{world}/videos/B/a.mp4,B\n"
                                f"{world}/videos/A/c.mp4,A\n")


def test_budget_check_names_the_field():
    with pytest.raises(ValueError, match="local_sets"):
        Budget(local_sets="v9").check()
    with pytest.raises(ValueError, match="scaling steps"):
        Budget(steps=600, scaling_steps=(600,)).check()
    with pytest.raises(ValueError, match="unknown variant"):
        Budget(scaling_variants=("moco",)).check()
