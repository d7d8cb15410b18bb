"""bench/gpu_check.sh --smoke: the prepared GPU check runs end to end on the CPU (tiny settings),
so that it cannot rot before a GPU is lent; and its table against a recorded anchor result."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402


def test_smoke_runs_every_part_and_writes_the_json(tmp_path):
    anchor = tmp_path / "anchor_r3d.json"  # the anchor's own format (shared/bench/anchor_r3d.py)
    anchor.write_text(json.dumps({"info": {"device": "cpu"}, "rows": [
        {"variant": "bf16-channels_last_3d-compile", "clips_per_step": 4,
         "median_step_s": 0.5, "clips_per_s": 8.0, "warmup_s": 1.0,
         "peak_mem_gib": float("nan"), "tflops": 0.01}]}))
    env = dict(os.environ, OMP_NUM_THREADS="1", OUT="")
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--smoke", "--out", str(tmp_path / "out"),
         "--work-dir", str(tmp_path / "work"), "--anchor-json", str(anchor)],
        capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert result["smoke"] and result["anchor"]["clips_per_s"] == 8.0
    eager, compiled = result["step"]
    assert (eager["compile"], compiled["compile"]) == (False, "eager")  # dynamo alone: quick
    for row in (eager, compiled):
        assert row["clips_per_s"] > 0 and row["gflop_per_clip"] > 0
        assert row["tflop_per_s"] == round(row["clips_per_s"] * row["gflop_per_clip"] / 1e3, 3)
        # the training step itself waits for nothing (the CPU augmentation parameters are
        # counted apart)
        assert row["host_reads_per_step"] == {}
    pretrain = result["pretrain"]
    assert pretrain["steps"] == 4 and pretrain["log_lines"] == 4
    assert pretrain["clips_per_s"] > 0 and 0 <= pretrain["data_wait_share"] <= 1
    ratios = {row["what"]: row.get("ratio_to_anchor") for row in result["table"]}
    assert ratios["ConST-CL step, eager"] == round(eager["clips_per_s"] / 8.0, 3)
    assert "| ConST-CL step, compiled |" in proc.stdout


def test_unknown_part_is_one_line_exit_2(capsys):
    assert gpu_check.main(["--parts", "step,warp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["constcl: error: --parts: unknown ['warp']; allowed: anchor, step, pretrain"]
