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
from constcl.commands.settings_flags import settings_from_args
from constcl.eval import classify, detect, propagate, track
from constcl.eval.settings import field_docs

REQUIRED = {"checkpoint": "random", "out": "/tmp/unused-out", "data": "/tmp/unused-data"}
CASES = [(classify, eval_classify), (detect, eval_detect), (track, eval_track),
         (propagate, eval_propagate)]
IDS = ["classify", "detect", "track", "propagate"]


def _parser(command) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser


def _parse(command, argv: list[str]) -> argparse.Namespace:
    return _parser(command).parse_args(argv)


def _all_fields(cls) -> list[tuple[type, dataclasses.Field]]:
    """(declaring dataclass, field) for every field, nested hyper-parameter classes included."""
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory):
            out += _all_fields(f.default_factory)
        else:
            out.append((cls, f))
    return out


@pytest.mark.parametrize(("task", "command"), CASES, ids=IDS)
def test_command_line_defaults_are_the_settings_defaults(task, command):
    args = _parse(command, [f"--{k}={v}" for k, v in REQUIRED.items()])
    assert settings_from_args(task.Settings, args) == task.Settings(**REQUIRED)


@pytest.mark.parametrize(("task", "command"), CASES, ids=IDS)
def test_every_field_is_one_flag_with_the_docstring_as_help(task, command):
    actions = {a.dest: a for a in _parser(command)._actions if a.dest != "help"}
    fields = _all_fields(task.Settings)
    assert sorted(actions) == sorted(f.name for _, f in fields)
    for owner, f in fields:
        doc = field_docs(owner)[f.name]  # KeyError: a field without documentation
        assert len(doc) > 10
        action = actions[f.name]
        assert action.option_strings[0] == "--" + f.name.replace("_", "-")
        # the help is the docstring entry without its markup (argparse %-escapes undone)
        plain = doc.replace("``", "").replace(":class:`", "").replace("`", "")
        assert action.help.replace("%%", "%").startswith(plain), (f.name, action.help, plain)
        if "choices" in f.metadata:
            assert tuple(action.choices) == f.metadata["choices"]


def test_field_docs_reads_entries_continuations_and_subclass_overrides():
    @dataclasses.dataclass
    class Base:
        """Summary line: not a field.

        alpha: first line
            continued here.
        beta: the base's text.
        gamma is not an entry: no field named so.
        """

        alpha: int = 1
        beta: int = 2

    @dataclasses.dataclass
    class Child(Base):
        """Child.

        Attributes:
            beta: the child's text.
            delta: own field.
        """

        delta: int = 3

    assert field_docs(Child) == {"alpha": "first line continued here.",
                                 "beta": "the child's text.", "delta": "own field."}


def test_bool_field_is_a_flag_and_its_negation():
    on = _parse(eval_propagate, [f"--{k}={v}" for k, v in REQUIRED.items()])
    off = _parse(eval_propagate, [*(f"--{k}={v}" for k, v in REQUIRED.items()),
                                  "--no-write-masks"])
    assert settings_from_args(propagate.Settings, on).write_masks is True
    assert settings_from_args(propagate.Settings, off).write_masks is False


def test_nested_tracker_and_propagation_flags_reach_the_settings():
    args = _parse(eval_track, [*(f"--{k}={v}" for k, v in REQUIRED.items()),
                               "--scale-num", "5", "--window-influence", "0.3"])
    s = settings_from_args(track.Settings, args)
    assert (s.tracker.scale_num, s.tracker.window_influence) == (5, 0.3)
    assert s.tracker.exemplar_sz == track.SiamFCConfig().exemplar_sz
    args = _parse(eval_propagate, [*(f"--{k}={v}" for k, v in REQUIRED.items()),
                                   "--temperature", "0.07", "--radius", "0"])
    p = settings_from_args(propagate.Settings, args).propagation
    assert (p.temperature, p.radius, p.topk) == (0.07, 0.0, propagate.PropagationConfig().topk)


def test_missing_required_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        _parse(eval_classify, ["--checkpoint", "random", "--out", "x"])
    assert "--data" in capsys.readouterr().err


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


def test_extract_flags_are_its_settings_fields():
    from constcl.commands import extract as extract_command
    from constcl.features.extract import ExtractSettings

    parser = _parser(extract_command)
    args = parser.parse_args(["videos/", "--checkpoint", "random", "--out", "/tmp/unused-out"])
    assert settings_from_args(ExtractSettings, args) == ExtractSettings(
        source="videos/", checkpoint="random", out="/tmp/unused-out")
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert sorted(actions) == sorted(f.name for f in dataclasses.fields(ExtractSettings))
    assert actions["source"].option_strings == []  # positional
    docs = field_docs(ExtractSettings)
    assert all(len(docs[f.name]) > 10 for f in dataclasses.fields(ExtractSettings))
    off = parser.parse_args(["v/", "--checkpoint", "random", "--out", "o", "--no-progress",
                             "--strict"])
    s = settings_from_args(ExtractSettings, off)
    assert (s.progress, s.strict) == (False, True)
