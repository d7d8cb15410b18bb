"""``constcl.load_encoder``: the right weights, the file's input convention, both input forms.

References are computed without the encoder: the trained model's own modules stage by stage on a
clip normalised by hand, and TensorFlow's features stored with the converter's fixture.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import constcl
from constcl.convert import ConvertSettings, convert_cvrl
from constcl.engine.export import export_backbone
from constcl.models import build_model
from constcl.models.r3d import standardize_clip
from tests.eval.test_export_branches import perturb

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tf"


def trained_model(input_norm: str = "none"):
    """A r3d_tiny ConST-CL whose weights and BN statistics moved away from their init."""
    torch.manual_seed(0)
    model = build_model("r3d_tiny", variant="constcl", local_source="y", context_length=3,
                        input_norm=input_norm)
    perturb(model.backbone, 1)
    perturb(model.res5_local, 2)
    return model.eval()


def reference_res5(model, frames: np.ndarray, branch: str, input_norm: str) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> res5 map, by hand: x / 127.5 - 1, the norm, stage by stage."""
    x = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    if input_norm == "clip":
        x = standardize_clip(x)
    with torch.no_grad():
        for name in ("stem", "res2", "res3", "res4"):
            x = getattr(model.backbone, name)(x)
        return (model.res5_local if branch == "local" else model.backbone.res5)(x)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, 8, 64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("input_norm", ["none", "clip"])
@pytest.mark.parametrize("branch", ["global", "local"])
def test_constcl_export(tmp_path: Path, frames: np.ndarray, branch: str,
                        input_norm: str) -> None:
    model = trained_model(input_norm)
    config = {"model": {"backbone": "r3d_tiny", "variant": "constcl", "local_source": "y",
                        "input_norm": input_norm}}
    path = export_backbone(model, tmp_path / "backbone.safetensors", config)
    encoder = constcl.load_encoder(path, branch=branch)
    assert not encoder.training and encoder.input_norm == input_norm
    assert encoder.padding == "torch" and encoder.out_channels == 64
    want = reference_res5(model, frames, branch, input_norm)
    with torch.no_grad():
        got = encoder.features(frames)
        pooled = encoder.embed(torch.from_numpy(frames))
    assert got.shape == (2, 64, 4, 2, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, want.mean(dim=(2, 3, 4)), rtol=1e-5, atol=1e-5)


def test_converted_cvrl_gives_tensorflow_features(tmp_path: Path) -> None:
    """A `constcl convert tf` file: padding tf_same and input_norm unit come from the file, so a
    [-1, 1] clip gives what TensorFlow computed from the same clip in [0, 1]."""
    meta = json.loads((FIXTURE / "fixture.json").read_text())
    out = tmp_path / "cvrl.safetensors"
    convert_cvrl(ConvertSettings(checkpoint=FIXTURE, out=out, bn_epsilon=meta["bn_epsilon"]))
    data = np.load(FIXTURE / "expected.npz")
    clip = torch.from_numpy(data["input"]).permute(0, 4, 1, 2, 3) * 2.0 - 1.0  # TF [0, 1]
    want = torch.from_numpy(data["res5"]).permute(0, 4, 1, 2, 3)  # TF is channels-last
    for branch in ("global", "local"):
        encoder = constcl.load_encoder(out, branch=branch)
        assert (encoder.input_norm, encoder.padding) == ("unit", "tf_same")
        with torch.no_grad():
            got, pooled = encoder.features(clip), encoder.embed(clip)
        assert (got - want).abs().max().item() < 1e-4
        assert (pooled - want.mean(dim=(2, 3, 4))).abs().max().item() < 1e-4


def test_uint8_frames_equal_float_clips_normalised_by_hand(frames: np.ndarray) -> None:
    encoder = constcl.load_encoder("random", backbone="r3d_tiny", seed=1)
    by_hand = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    with torch.no_grad():
        torch.testing.assert_close(encoder.embed(frames), encoder.embed(by_hand))


def test_wrong_inputs_are_refused_or_warned(frames: np.ndarray,
                                            caplog: pytest.LogCaptureFixture) -> None:
    encoder = constcl.load_encoder("random", backbone="r3d_tiny")
    as_255 = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float()
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        encoder.embed(as_255)
    with pytest.raises(ValueError, match=r"\(B, T, H, W, 3\)"):
        encoder.embed(torch.from_numpy(frames).permute(0, 4, 1, 2, 3).contiguous())
    with pytest.raises(ValueError, match="float clips must be"):
        encoder.embed(torch.zeros(2, 8, 64, 64, 3))
    with caplog.at_level(logging.WARNING), torch.no_grad():
        encoder.embed(as_255 / 255.0)
        encoder.embed(as_255 / 255.0)
    warnings = [r for r in caplog.records if "[0, 1]" in r.getMessage()]
    assert len(warnings) == 1  # once per encoder


def test_random_init_is_seeded_and_needs_a_backbone(frames: np.ndarray) -> None:
    a = constcl.load_encoder("random", backbone="r3d_tiny", seed=4)
    b = constcl.load_encoder("random", backbone="r3d_tiny", seed=4)
    c = constcl.load_encoder("random", backbone="r3d_tiny", seed=5)
    with torch.no_grad():
        assert torch.equal(a.embed(frames), b.embed(frames))
        assert not torch.equal(a.embed(frames), c.embed(frames))
    with pytest.raises(ValueError, match="backbone"):
        constcl.load_encoder("random")
    with pytest.raises(ValueError, match="branch"):
        constcl.load_encoder("random", branch="both", backbone="r3d_tiny")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        constcl.load_encoder("nowhere/backbone.safetensors")
