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


def _outcomes(both: int, only_first: int, only_second: int, neither: int):
    """Two {video: correct} dicts over the same videos with the given agreement counts."""
    first, second = {}, {}
    kinds = [(True, True)] * both + [(True, False)] * only_first + [(False, True)] * only_second
    kinds += [(False, False)] * neither
    for i, (x, y) in enumerate(kinds):
        first[f"v{i}"], second[f"v{i}"] = x, y
    return first, second


def test_demo_verdict_is_a_paired_test_beyond_two_standard_errors():
    from constcl.commands.demo import verdict

    # 40 videos, 12 right only pretrained, 2 right only random: diff = 10 / 40 = 25 points,
    # se = sqrt(12 + 2 - 10^2 / 40) / 40 = sqrt(11.5) / 40 = 0.0848, 2 se = 17.0 points
    ours, base = _outcomes(8, 12, 2, 18)
    assert verdict(ours, base).startswith("pretraining beats")
    assert "+25.0 points, noise +-17.0" in verdict(ours, base)
    assert verdict(base, ours).startswith("random init beats")
    # 3 vs 1 discordant: diff 5 points, se = sqrt(4 - 4 / 40) / 40 = 0.0494: inside the noise
    ours, base = _outcomes(10, 3, 1, 26)
    assert verdict(ours, base).startswith("pretrained and random init do not differ")
    # the same right and wrong videos: the floor of one video (2 se = 5 points over 40)
    ours, base = _outcomes(10, 0, 0, 30)
    assert "+0.0 points, noise +-5.0" in verdict(ours, base)
    # only videos both probes evaluated count
    ours, base = _outcomes(8, 12, 2, 18)
    ours["extra"] = True
    assert "paired over 40 test videos" in verdict(ours, base)
    assert verdict({}, {}).startswith("no test video")


def test_correct_per_video_reads_a_predictions_file(tmp_path):
    from constcl.commands.demo import correct_per_video

    path = tmp_path / "predictions.csv"
    path.write_text("video,label,prediction,top5,scores\na.mp4,3,3,3 1,0.9 0.1\n"
                    "b.mp4,2,10,10 2,0.6 0.4\n")
    assert correct_per_video(path) == {"a.mp4": True, "b.mp4": False}
