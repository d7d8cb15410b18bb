"""The evaluation API: typed settings per task, the command line only parses into them.

* the command line's defaults are the settings' defaults (one source of truth for a user who
  switches between ``constcl eval TASK`` and ``constcl.eval.TASK.run``);
* a bad value names the field and what is allowed, before any data is read;
* ``run(Settings(...))`` returns what it writes to ``results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from constcl.commands import eval_classify, eval_detect, eval_propagate, eval_track
from constcl.commands.eval_args import settings_from_args
from constcl.eval import classify, detect, propagate, track

REQUIRED = {"checkpoint": "random", "out": "/tmp/unused-out", "data": "/tmp/unused-data"}
CASES = [(classify, eval_classify, {}), (detect, eval_detect, {}),
         (track, eval_track, {"tracker": track.SiamFCConfig()}),
         (propagate, eval_propagate, {"propagation": propagate.PropagationConfig()})]


def _parse(command, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(("task", "command", "nested"), CASES,
                         ids=["classify", "detect", "track", "propagate"])
def test_command_line_defaults_are_the_settings_defaults(task, command, nested):
    args = _parse(command, [f"--{k}={v}" for k, v in REQUIRED.items()])
    from_cli = settings_from_args(task.Settings, args, **nested)
    assert from_cli == task.Settings(**REQUIRED)
    # and every settings field is reachable from the command line
    names = set(vars(args))
    missing = {f.name for f in dataclasses.fields(task.Settings)} - names - set(nested)
    assert missing <= {"write_masks"}  # propagate: --no-masks is its negation


def test_nested_tracker_and_propagation_flags_reach_the_settings():
    args = _parse(eval_track, [*(f"--{k}={v}" for k, v in REQUIRED.items()),
                               "--scale-num", "5", "--window-influence", "0.3"])
    tracker = track.SiamFCConfig(**{f.name: getattr(args, f.name)
                                    for f in dataclasses.fields(track.SiamFCConfig)})
    s = settings_from_args(track.Settings, args, tracker=tracker)
    assert (s.tracker.scale_num, s.tracker.window_influence) == (5, 0.3)


@pytest.mark.parametrize(("make", "field", "allowed"), [
    (lambda: classify.Settings(**REQUIRED, mode="svm"), "mode", "linear"),
    (lambda: classify.Settings(**REQUIRED, crops=2), "crops", "[1, 3]"),
    (lambda: classify.Settings(**REQUIRED, frames=0), "frames", "positive"),
    (lambda: detect.Settings(**REQUIRED, boxes="people"), "boxes", "detections"),
    (lambda: detect.Settings(**REQUIRED, det_thresh=2.0), "det_thresh", "[0, 1]"),
    (lambda: track.Settings(**REQUIRED, branch="middle"), "branch", "local"),
    (lambda: track.Settings(**REQUIRED, feature_norm="l1"), "feature_norm", "l2"),
    (lambda: propagate.Settings(**REQUIRED, stage="res9"), "stage", "res4"),
    (lambda: propagate.Settings(**REQUIRED, frame_mode="video"), "frame_mode", "static"),
])
def test_bad_settings_name_the_field_and_the_allowed_values(make, field, allowed):
    with pytest.raises(ValueError) as err:
        make()
    assert field in str(err.value) and allowed in str(err.value)


def test_command_line_turns_a_bad_value_into_one_line(caplog):
    from constcl.cli import main

    code = main(["eval", "classify", *(f"--{k}={v}" for k, v in REQUIRED.items()),
                 "--frames", "0"])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
    assert len(errors) == 1 and "frames must be positive" in errors[0]


def test_missing_checkpoint_fails_before_reading_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        classify.run(classify.Settings(checkpoint=tmp_path / "nope.safetensors",
                                       data=tmp_path / "no-data", out=tmp_path / "out"))
    with pytest.raises(ValueError, match="needs a backbone"):
        detect.run(detect.Settings(checkpoint="random", data=tmp_path / "no-data",
                                   out=tmp_path / "out"))


TINY = {"checkpoint": "random", "backbone": "r3d_tiny", "workers": 0, "device": "cpu"}
API_CASES = {
    "classify": (lambda w: {"data": w, "frames": 4, "stride": 2, "size": 64, "clips": 1,
                            "crops": 1, "epochs": 3},
                 ["--frames", "4", "--stride", "2", "--size", "64", "--clips", "1", "--crops",
                  "1", "--epochs", "3"]),
    "detect": (lambda w: {"data": w / "ava", "frames": 4, "stride": 2, "size": 64, "epochs": 3},
               ["--frames", "4", "--stride", "2", "--size", "64", "--epochs", "3"]),
    "track": (lambda w: {"data": w, "sequences": 2, "stage": "res3"},
              ["--sequences", "2", "--stage", "res3"]),
    "propagate": (lambda w: {"data": w, "sequences": 2, "overlay_sequences": 0},
                  ["--sequences", "2", "--overlay-sequences", "0"]),
}


@pytest.mark.parametrize("name", list(API_CASES))
def test_python_api_returns_what_it_writes_and_what_the_command_line_gets(name, world,
                                                                          tmp_path):
    """``run(Settings(...))`` returns its ``results.json``, and the command line with the same
    values (it only parses flags into the same settings) gets the same metrics."""
    from constcl.cli import main

    task = {"classify": classify, "detect": detect, "track": track, "propagate": propagate}[name]
    fields, flags = API_CASES[name]
    result = task.run(task.Settings(**TINY, **fields(world), out=tmp_path / "api"))
    written = json.loads((tmp_path / "api" / "results.json").read_text())
    assert written["metrics"] == pytest.approx(result["metrics"], nan_ok=True)
    assert written["task"] == result["task"] == name

    data = str(fields(world)["data"])
    cli = [f"--{k}={v}" for k, v in TINY.items()] + ["--data", data, *flags]
    assert main(["eval", name, *cli, "--out", str(tmp_path / "cli")]) == 0
    from_cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    timing = {"fps"}  # the tracker's speed differs from run to run
    assert {k: v for k, v in from_cli["metrics"].items() if k not in timing} == pytest.approx(
        {k: v for k, v in written["metrics"].items() if k not in timing}, nan_ok=True)
