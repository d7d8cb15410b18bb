"""Unit tests of the safety checks around a run: config validation of non-finite numbers and of
train.resume_allow_changes, the resume config comparison, metrics.jsonl truncation, and the box
coverage check of data.region_generator=detections."""

import dataclasses
import json
import logging
import shutil

import pytest

from constcl.config import (
    RESUME_HARMLESS,
    RESUME_SHAPE,
    Config,
    ConfigError,
    load_config,
    resume_kind,
    to_dict,
)
from constcl.engine import resume
from constcl.engine.data import build_dataset
from constcl.engine.pretrain import pretrain
from tests.engine.conftest import tiny_overrides


def float_fields():
    return [f"{section.name}.{f.name}" for section in dataclasses.fields(Config)
            for f in dataclasses.fields(section.type if isinstance(section.type, type)
                                        else getattr(Config(), section.name))
            if f.type in (float, "float")]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_every_float_field_rejects_non_finite_values(value):
    names = float_fields()
    assert "optim.base_lr" in names and "loss.region_weight" in names
    for name in names:
        with pytest.raises(ConfigError) as err:
            load_config(None, [f"{name}={value}"])
        assert name in str(err.value) and "finite" in str(err.value), name


def test_resume_allow_changes_parses_lists_and_all():
    cfg = load_config(None, ["train.resume_allow_changes=train.batch_size, optim.base_lr"])
    assert cfg.train.resume_allow_changes == ["train.batch_size", "optim.base_lr"]
    assert load_config(None, ["train.resume_allow_changes=all"]).train.resume_allow_changes \
        == ["all"]
    assert load_config(None, ["train.resume_allow_changes=[train.steps]"]
                       ).train.resume_allow_changes == ["train.steps"]
    assert Config().train.resume_allow_changes == []


@pytest.mark.parametrize("value, words", [
    ("model.backbone", ["model.backbone", "never change"]),
    ("train.run_name", ["train.run_name", "always change"]),
    ("train.batchsize", ["train.batchsize", "train.batch_size"]),
    ("all,train.steps", ["'all' alone"]),
])
def test_resume_allow_changes_rejects_bad_names(value, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"train.resume_allow_changes={value}"])
    for word in words:
        assert word in str(err.value)


def test_resume_must_be_a_mode_or_an_existing_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.resume=never"])
    assert "train.resume='never'" in str(err.value) and "restart" in str(err.value)
    path = tmp_path / "step.pt"
    path.write_bytes(b"")
    assert load_config(None, [f"train.resume={path}"]).train.resume == str(path)
    assert load_config(None, ["train.resume=restart"]).train.resume == "restart"


def test_check_finite_weights_names_the_parameter():
    import torch

    from constcl.engine.loop import NonFiniteWeights, check_finite_weights

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    check_finite_weights(model, 1)
    with torch.no_grad():
        model[1].bias[0] = float("nan")
    with pytest.raises(NonFiniteWeights, match=r"step 7: 1 parameter.*1\.bias"):
        check_finite_weights(model, 7)


def test_every_field_has_a_resume_class_named_in_the_docs():
    from constcl.config import field_docs

    fields = [f"{s}.{k}" for s, values in to_dict(Config()).items() for k in values]
    assert set(RESUME_SHAPE) <= set(fields) and set(RESUME_HARMLESS) <= set(fields)
    doc = field_docs()["train.resume_allow_changes"]
    for name in fields:
        short = name.split(".", 1)[1]
        if resume_kind(name) == "run" and not name.startswith(("data.", "loss.", "optim.")):
            assert short in doc, name
        if resume_kind(name) == "shape":
            assert short in doc, name


def test_saved_config_with_allowed_changes_loads_again(tmp_path):
    from constcl.config import save_config

    cfg = load_config(None, ["train.resume_allow_changes=train.steps,optim.base_lr"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again.train.resume_allow_changes == ["train.steps", "optim.base_lr"]
    assert to_dict(again) == to_dict(cfg)


def checkpoint_state(cfg):
    return {"config": json.dumps(to_dict(cfg))}


def test_check_resume_config_names_every_change():
    old = load_config(None, ["model.backbone=r3d_tiny"])
    new = load_config(None, ["model.backbone=r3d_small", "model.embed_dim=64",
                             "train.run_name=x", "data.workers=0"])
    with pytest.raises(ConfigError) as err:
        resume.check_resume_config(new, checkpoint_state(old), "ck.pt")
    text = str(err.value)
    assert "model.backbone: 'r3d_tiny' -> 'r3d_small'" in text
    assert "model.embed_dim: 128 -> 64" in text and "train.run_name:" not in text

    harmless = load_config(None, ["train.run_name=x", "data.workers=0", "train.log_every=3"])
    assert resume.check_resume_config(harmless, checkpoint_state(Config()), "ck.pt") == {}


def test_a_field_added_since_the_checkpoint_counts_as_its_default():
    """A checkpoint written before model.input_norm existed ran with the default ("none"):
    resuming it with input_norm=clip is a change that needs permission, resuming with the
    default is none."""
    saved = to_dict(Config())
    del saved["model"]["input_norm"]
    state = {"config": json.dumps(saved)}
    assert resume.check_resume_config(Config(), state, "ck.pt") == {}
    with pytest.raises(ConfigError, match="model.input_norm: 'none' -> 'clip'"):
        resume.check_resume_config(load_config(None, ["model.input_norm=clip"]), state, "ck.pt")


def test_check_resume_config_run_fields_need_permission(caplog):
    new = load_config(None, ["train.batch_size=8", "optim.base_lr=0.1"])
    with pytest.raises(ConfigError) as err:
        resume.check_resume_config(new, checkpoint_state(Config()), "ck.pt")
    assert "train.batch_size: 64 -> 8" in str(err.value)
    assert "train.resume_allow_changes=optim.base_lr,train.batch_size" in str(err.value)
    new.train.resume_allow_changes = ["train.batch_size"]
    with pytest.raises(ConfigError, match="optim.base_lr") as err:
        resume.check_resume_config(new, checkpoint_state(Config()), "ck.pt")
    assert "train.batch_size: 64" not in str(err.value)  # the allowed change is not refused
    new.train.resume_allow_changes = ["optim.base_lr", "train.batch_size"]
    assert set(resume.check_resume_config(new, checkpoint_state(Config()), "ck.pt")) == {
        "optim.base_lr", "train.batch_size"}
    new.train.resume_allow_changes = ["all"]
    with caplog.at_level(logging.WARNING, logger="constcl.train"):
        changes = resume.check_resume_config(new, checkpoint_state(Config()), "ck.pt")
    assert changes == {"optim.base_lr": (0.32, 0.1), "train.batch_size": (64, 8)}
    assert "train.batch_size" in caplog.text and "optim.base_lr" in caplog.text


def test_truncate_metrics_keeps_steps_up_to_the_checkpoint(tmp_path):
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in range(1, 7)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 7, "lo')
    assert resume.truncate_metrics(tmp_path, 3) == 4
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert resume.truncate_metrics(tmp_path, 3) == 0
    assert not list(tmp_path.glob(".metrics*"))


def test_resumed_optimizer_keeps_the_configured_hyperparameters():
    import torch

    from constcl.engine.optim import build_optimizer
    from constcl.engine.setup import load_optimizer_state
    from constcl.models import build_model

    model = build_model("r3d_tiny", context_length=3)
    old = build_optimizer(model, "sgd", 0.1, 0.9, 1e-6, 0.001, 10.0)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    old.step()
    new = build_optimizer(model, "sgd", 0.1, 0.5, 1e-4, 0.001, 20.0)
    load_optimizer_state(new, old.state_dict())
    assert {g["momentum"] for g in new.param_groups} == {0.5}
    assert max(g["lr_scale"] for g in new.param_groups) == 20.0
    assert max(g["weight_decay"] for g in new.param_groups) > 1e-6
    first = next(model.parameters())
    assert torch.equal(new.state[first]["momentum_buffer"], old.state[first]["momentum_buffer"])


def test_previous_outputs_and_move_aside(tmp_path):
    assert resume.previous_outputs(tmp_path / "missing") == []
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "tensorboard" / "events").write_text("x")
    (tmp_path / "checkpoints").mkdir()
    assert resume.previous_outputs(tmp_path) == [tmp_path / "tensorboard"]
    assert resume.previous_outputs(tmp_path, resume.BLOCKING_OUTPUTS) == []
    (tmp_path / "backbone.safetensors").write_text("x")
    found = resume.previous_outputs(tmp_path)
    assert resume.previous_outputs(tmp_path, resume.BLOCKING_OUTPUTS) == [
        tmp_path / "backbone.safetensors"]
    moved = resume.move_aside(tmp_path, found)
    assert moved.name.startswith("replaced-") and (moved / "tensorboard" / "events").is_file()
    assert resume.previous_outputs(tmp_path) == []


def detection_config(world, tmp_path, boxes_dir):
    return load_config(None, tiny_overrides(world, tmp_path, "det") + [
        "data.region_generator=detections", f"data.boxes_dir={boxes_dir}"])


def test_detections_without_any_box_file_fail_at_start(world, tmp_path):
    empty = tmp_path / "no_boxes"
    empty.mkdir()
    with pytest.raises(ConfigError) as err:
        build_dataset(detection_config(world, tmp_path, empty))
    text = str(err.value)
    assert "0 of 12" in text and str(empty) in text and "data.boxes_dir" in text


def test_data_errors_stop_pretraining_before_the_run_folder_exists(world, tmp_path):
    """No box file at all, or no video at all: the run stops before config.yaml or anything
    else is written (a resumable folder is never touched by a run that cannot start)."""
    empty = tmp_path / "no_boxes"
    empty.mkdir()
    with pytest.raises(ConfigError, match="0 of 12"):
        pretrain(detection_config(world, tmp_path, empty))
    no_videos = tmp_path / "no_videos"
    no_videos.mkdir()
    cfg = load_config(None, tiny_overrides(no_videos, tmp_path, "det"))
    with pytest.raises(FileNotFoundError, match="no videos found"):
        pretrain(cfg)
    assert not (tmp_path / "det").exists()


def test_detections_with_some_box_files_warn(world, tmp_path, caplog):
    some = tmp_path / "some_boxes"
    some.mkdir()
    boxes = sorted((world.parent / "boxes").glob("*.csv"))
    assert len(boxes) == 12  # the synthetic world has a box file for every video
    for path in boxes[:3]:
        shutil.copy(path, some / path.name)
    with caplog.at_level(logging.WARNING, logger="constcl.train"):
        dataset = build_dataset(detection_config(world, tmp_path, some))
    assert len(dataset) == 12
    assert "3 of 12" in caplog.text and str(some) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="constcl.train"):
        build_dataset(detection_config(world, tmp_path, world.parent / "boxes"))
    assert "box file" not in caplog.text


def test_synthetic_world_settings_are_inert_when_neither_run_used_that_world(tmp_path):
    """A bench run trains on its own world folder; a later change of the preset's default
    synthetic world size must not block resuming it, while a run on the built-in world must
    still be refused when that world changes."""
    old = load_config(None, [f"data.source={tmp_path}", "data.synth_videos=200"])
    new = load_config(None, [f"data.source={tmp_path}", "data.synth_videos=500"])
    assert resume.check_resume_config(new, checkpoint_state(old), "ck.pt") == {}
    with pytest.raises(ConfigError, match="data.synth_videos: 200 -> 500"):
        resume.check_resume_config(load_config(None, ["data.synth_videos=500"]),
                                   checkpoint_state(load_config(None, ["data.synth_videos=200"])),
                                   "ck.pt")
    with pytest.raises(ConfigError, match=f"data.source: '{tmp_path}' -> 'synthetic'"):
        resume.check_resume_config(load_config(None, ["data.synth_videos=500"]),
                                   checkpoint_state(old), "ck.pt")
