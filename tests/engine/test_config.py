import pytest

from constcl.cli import main
from constcl.config import Config, ConfigError, field_docs, load_config, to_dict
from constcl.engine.presets import preset_path, presets


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(None, ["train.steps=12", "optim.base_lr=0.05", "model.sync_bn=false",
                             f"data.source={tmp_path}"])
    assert cfg.train.steps == 12 and cfg.optim.base_lr == 0.05 and cfg.model.sync_bn is False
    assert cfg.data.source == str(tmp_path)


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 7\n  batch_size: 3\nmodel:\n  backbone: r3d_tiny\n")
    cfg = load_config(path, ["train.steps=9"])
    assert (cfg.train.steps, cfg.train.batch_size, cfg.model.backbone) == (9, 3, "r3d_tiny")


@pytest.mark.parametrize("override, words", [
    (["train.stepz=3"], ["train.stepz", "steps"]),                    # unknown key
    (["trian.steps=3"], ["trian.steps", "train"]),                    # unknown section
    (["model.context_length=4"], ["model.context_length", "odd"]),    # even context length
    (["optim.base_lr=-0.1"], ["optim.base_lr", "> 0"]),               # negative LR
    (["data.source=/no/such/folder"], ["data.source", "does not exist"]),
    (["model.variant=simclr"], ["model.variant", "constcl", "cvrl"]),
    (["train.steps=ten"], ["train.steps", "int"]),
])
def test_invalid_configs_name_the_field_and_allowed_values(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    for word in words:
        assert word in str(err.value)


def test_context_length_must_fit_the_clip():
    with pytest.raises(ConfigError, match="clip_frames"):
        load_config(None, ["data.clip_frames=4", "model.context_length=3"])


def test_presets_validate(tmp_path):
    assert {"demo", "k400_r3d50_200k"} <= set(presets())
    demo = load_config(preset_path("demo"))
    assert demo.data.source == "synthetic"
    with pytest.raises(ConfigError, match="data.source is required"):
        load_config(preset_path("k400_r3d50_200k"))
    paper = load_config(preset_path("k400_r3d50_200k"), [f"data.source={tmp_path}"])
    assert paper.model.backbone == "r3d50" and paper.train.steps == 200000
    assert paper.train.batch_size * 64 == 1024


def test_cli_rejects_bad_config_before_any_work(tmp_path, caplog):
    code = main(["pretrain", "demo", "model.context_length=2",
                 f"train.out_dir={tmp_path}"])
    assert code == 2
    assert "model.context_length" in caplog.text
    assert not any(tmp_path.iterdir())  # no run folder was created


def test_every_field_is_documented():
    docs = field_docs()
    fields = [f"{s}.{k}" for s, values in to_dict(Config()).items() for k in values]
    assert [f for f in fields if not docs.get(f)] == []
    assert "global_batch" in docs["optim.base_lr"]


def test_list_config_prints_keys_with_docs(capsys):
    assert main(["pretrain", "--list-config"]) == 0
    out = capsys.readouterr().out
    assert "optim.base_lr=0.32" in out and "global_batch / 256" in out
    assert "data.color_strength=1.0" in out


def test_demo_verdict_needs_a_difference_beyond_two_standard_errors():
    from constcl.commands.demo import verdict

    # 40 test videos, 0.5 vs 0.25: se = sqrt((0.25 + 0.1875) / 40) = 0.1046, 2 se = 20.9 points
    assert verdict(0.50, 0.25, 40).startswith("pretraining beats")
    assert "+25.0 points, noise +-20.9" in verdict(0.50, 0.25, 40)
    assert verdict(0.25, 0.50, 40).startswith("random init beats")
    # 0.30 vs 0.25 is two videos apart but far inside the noise of 40 videos
    assert verdict(0.30, 0.25, 40).startswith("pretrained and random init do not differ")
    # 1000 videos: se = sqrt((0.21 + 0.1875) / 1000) = 0.0199; 5 points > 2 se = 3.99
    assert verdict(0.30, 0.25, 1000).startswith("pretraining beats")
    # both at 0 or 1: the floor of one test video
    assert verdict(1.0, 1.0, 10).startswith("pretrained and random init do not differ")
    assert verdict(0.5, 0.5, 0).startswith("no test video")
