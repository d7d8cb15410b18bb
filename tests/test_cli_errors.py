"""Expected errors reach the user as one line ``constcl: error: <message>`` with exit code 2;
``--debug`` / ``CONSTCL_DEBUG=1`` show the traceback instead."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from constcl.cli import main
from constcl.errors import DataFileError, user_message


def user_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The ``constcl: error:`` lines main() emitted (log records rendered as that line)."""
    return [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]


def fails_with(caplog, argv: list[str], *expected: str) -> str:
    caplog.clear()
    assert main(argv) == 2
    errors = user_errors(caplog)
    assert len(errors) == 1, errors
    assert "\n" not in errors[0]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def test_missing_checkpoint_fails_before_the_data_is_read(caplog, tmp_path):
    fails_with(caplog, ["eval", "classify", "--checkpoint", str(tmp_path / "nope.safetensors"),
                        "--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "out")],
               "nope.safetensors", "does not exist")


def test_random_bytes_checkpoint(caplog, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(os.urandom(256))
    fails_with(caplog, ["eval", "classify", "--checkpoint", str(bad), "--data",
                        str(tmp_path / "no-data"), "--out", str(tmp_path / "out")],
               "bad.safetensors", "not a readable safetensors file")


def test_bad_numbers_on_the_command_line(caplog, tmp_path):
    fails_with(caplog, ["info", "--frames", "0"], "--frames must be at least 1")
    fails_with(caplog, ["data", "preview", str(tmp_path / "v.mp4"), "--out",
                        str(tmp_path / "p.png"), "--size", "0"], "size must be at least 1")
    fails_with(caplog, ["data", "synth", str(tmp_path / "w"), "--videos", "0"], "num_videos")


def test_yaml_syntax_error_names_the_file(caplog, tmp_path):
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("train:\n  steps: [1, 2\nmodel: {\n")
    message = fails_with(caplog, ["pretrain", str(cfg)], "invalid config", "broken.yaml")
    assert "line" in message
    assert not (tmp_path / "runs").exists()


def test_data_check_of_an_empty_folder(caplog, tmp_path):
    (tmp_path / "empty").mkdir()
    fails_with(caplog, ["data", "check", str(tmp_path / "empty"), "--workers", "1"],
               "no videos found")
    fails_with(caplog, ["data", "check", str(tmp_path / "nowhere")], "nowhere")


def test_class_ind_with_a_missing_column(caplog, tmp_path):
    splits = tmp_path / "ucfTrainTestlist"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 Archery\n2\n")
    (splits / "trainlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 1\n")
    (splits / "testlist01.txt").write_text("Archery/v_Archery_g02_c01.avi\n")
    fails_with(caplog, ["eval", "classify", "--checkpoint", "random", "--backbone", "r3d_tiny",
                        "--data", str(tmp_path), "--out", str(tmp_path / "out")],
               f"{splits / 'classInd.txt'}:2:", "expected '<class id> <class name>'")


def test_debug_shows_the_traceback(monkeypatch):
    with pytest.raises(ValueError, match="--frames must be at least 1"):
        main(["--debug", "info", "--frames", "0"])
    monkeypatch.setenv("CONSTCL_DEBUG", "1")
    with pytest.raises(ValueError, match="--frames must be at least 1"):
        main(["info", "--frames", "0"])


def test_real_stderr_is_one_line_and_debug_has_the_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CONSTCL_DEBUG"}
    cmd = [sys.executable, "-m", "constcl", "data", "synth", str(tmp_path / "w"), "--videos", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert out.stderr.splitlines() == ["constcl: error: num_videos must be at least 1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         env={**env, "CONSTCL_DEBUG": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr


class _Failing(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise DataFileError("list.csv", "time_start 'abc' is not a number of seconds", 7)


def test_error_in_a_dataloader_worker_keeps_its_one_line_message():
    loader = DataLoader(_Failing(), batch_size=None, num_workers=1)
    with pytest.raises(DataFileError) as err:
        next(iter(loader))
    assert "DataLoader worker" in str(err.value)  # PyTorch's wrapping, with the traceback
    assert user_message(err.value) == "list.csv:7: time_start 'abc' is not a number of seconds"


def test_user_message_of_plain_and_multi_line_errors():
    assert user_message(ValueError("bad value")) == "bad value"
    assert user_message(ValueError("first\n  second\n")) == "first; second"
    wrapped = ValueError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback "
                         "(most recent call last):\n  File \"x.py\", line 1, in f\n"
                         "ValueError: the real reason\n")
    assert user_message(wrapped) == "the real reason"
    assert torch.utils.data.get_worker_info() is None


def test_run_stopping_errors_of_training_are_one_line(caplog, monkeypatch):
    from constcl.commands import info
    from constcl.data.dataset import TooManyBadVideos

    def stop(args):
        raise TooManyBadVideos("12 of 20 videos failed to decode (e.g. a.mp4: truncated)")

    monkeypatch.setattr(info, "run", stop)
    fails_with(caplog, ["info"], "12 of 20 videos failed to decode")

    def bug(args):
        raise RuntimeError("an unexpected bug")

    monkeypatch.setattr(info, "run", bug)
    with pytest.raises(RuntimeError, match="an unexpected bug"):  # a bug keeps its traceback
        main(["info"])


def test_library_errors_survive_pytorchs_one_argument_re_raise():
    from constcl.data.decode import VideoError

    for cls, args in ((DataFileError, ("a.csv", "bad", 3)), (VideoError, ("a.mp4", "truncated"))):
        original = cls(*args)
        again = cls(str(original))  # what a DataLoader worker's exception becomes
        assert str(again) == str(original)


@pytest.mark.parametrize("argv, words", [
    (["eval", "classify", "--frames", "x"], ["constcl eval classify", "--frames", "'x'"]),
    (["nosuch"], ["invalid choice", "'nosuch'"]),
    (["data", "check"], ["constcl data check", "required", "path"]),
    (["data", "synth", "w", "--out", "x"], ["constcl data synth", "unrecognized", "--out x"]),
])
def test_usage_errors_are_one_line(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("constcl: error: ")
    for word in words:
        assert word in err
    assert "--help" in err and "usage:" not in err
