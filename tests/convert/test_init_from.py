"""``model.init_from``: pretraining starts from a converted (or exported) backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from constcl.config import Config, ConfigError, load_config
from constcl.convert import ConvertSettings, convert_cvrl
from constcl.engine.init_from import load_init_weights
from constcl.engine.setup import build_network
from constcl.errors import ConstclError
from constcl.eval.encoder import load_backbone
from constcl.models import build_model
from constcl.models.r3d import TFSameConv3d

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tf"


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cvrl") / "backbone.safetensors"
    convert_cvrl(ConvertSettings(checkpoint=FIXTURE, out=out, bn_epsilon=1e-3))
    return out


def _config(path: Path, **model: str) -> Config:
    cfg = Config()
    cfg.model.backbone, cfg.model.init_from = "r3d_tf_tiny", str(path)
    cfg.model.input_norm, cfg.model.padding = "unit", "tf_same"
    cfg.model.context_length = 1
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return cfg


def test_build_network_loads_trunk_and_both_res5_copies(converted: Path) -> None:
    torch.manual_seed(0)
    _, plain = build_network(_config(converted), torch.device("cpu"))
    reference = load_backbone(converted)
    for key, value in reference.state_dict().items():
        assert torch.equal(plain.backbone.state_dict()[key], value), key
        if key.startswith("res5."):
            assert torch.equal(plain.res5_local.state_dict()[key[5:]], value), key
    assert plain.backbone.padding == "tf_same"
    assert isinstance(plain.res5_local[0].conv2, TFSameConv3d)
    torch.manual_seed(0)
    fresh = build_model("r3d_tf_tiny", context_length=1)
    # the heads keep the random initialisation the same seed gives without init_from
    for key, value in fresh.global_head.state_dict().items():
        assert torch.equal(plain.global_head.state_dict()[key], value), key


@pytest.mark.parametrize(("field", "value"), [("padding", "torch"), ("input_norm", "none"),
                                              ("backbone", "r3d_tiny")])
def test_a_mismatch_with_the_file_is_refused(converted: Path, field: str, value: str) -> None:
    cfg = _config(converted, **{field: value})
    model = build_model(cfg.model.backbone, padding=cfg.model.padding, context_length=1)
    with pytest.raises(ConstclError, match=f"model.{field}"):
        load_init_weights(model, converted, cfg.model.backbone, cfg.model.input_norm,
                          cfg.model.padding)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.init_from"):
        load_config(None, ["data.source=synthetic", f"model.init_from={tmp_path / 'x'}"])
    cfg = load_config(None, ["data.source=synthetic", "model.padding=tf_same",
                             "model.input_norm=unit"])
    assert cfg.model.padding == "tf_same" and cfg.model.init_from == ""
    with pytest.raises(ConfigError, match="model.padding"):
        load_config(None, ["data.source=synthetic", "model.padding=valid"])


def test_a_mismatch_stops_the_config_before_any_run_folder(converted: Path) -> None:
    with pytest.raises(ConfigError, match="set model.padding=tf_same"):
        load_config(None, ["data.source=synthetic", "model.backbone=r3d_tf_tiny",
                           "model.input_norm=unit", f"model.init_from={converted}"])
    cfg = load_config(None, ["data.source=synthetic", "model.backbone=r3d_tf_tiny",
                             "model.input_norm=unit", "model.padding=tf_same",
                             f"model.init_from={converted}", "model.context_length=1"])
    assert cfg.model.init_from == str(converted)
