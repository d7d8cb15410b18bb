from constcl.eval.bench import HEADLINES, TASKS, Budget, headline_row, write_results


def fake_results(scale: float) -> dict[str, dict]:
    return {task: {"metrics": {key: scale for _, key in HEADLINES[task]}} for task in TASKS}


def test_results_table_and_report(tmp_path):
    rows = [("random init", "global", headline_row(fake_results(0.125))),
            ("constcl", "local", headline_row(fake_results(0.5)))]
    plot = tmp_path / "eval" / "x" / "track" / "success_plots.png"
    plot.parent.mkdir(parents=True)
    plot.write_bytes(b"png")
    write_results(tmp_path, rows, Budget(10, 24, "r3d_tiny", 8, 32, 4, 0), 1.5, [plot])
    text = (tmp_path / "RESULTS.md").read_text()
    columns = sum(len(HEADLINES[t]) for t in TASKS)
    assert "| random init | global | " + " | ".join(["12.5"] * columns) + " |" in text
    assert "| constcl | local | " + " | ".join(["50.0"] * columns) + " |" in text
    assert "10 steps x 4 videos" in text and "seed 0" in text
    report = (tmp_path / "report.html").read_text()
    assert "eval/x/track/success_plots.png" in report and "<table" in report


def test_missing_metric_is_marked():
    results = fake_results(0.5)
    results["detect"]["metrics"] = {}
    assert "n/a" in headline_row(results)
