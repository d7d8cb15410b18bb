"""``viz regions``: attention weights, matches drawn as the region loss sees them, the command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.patches import ConnectionPatch

from constcl.cli import main
from constcl.config import load_config, save_config, to_dict
from constcl.data.encode import write_video
from constcl.engine.checkpoint import save_checkpoint
from constcl.engine.presets import preset_path
from constcl.models.constcl import build_model
from constcl.models.region_head import DecoderLayer, RegionHead
from constcl.viz.figure import box_centres, regions_figure
from constcl.viz.regions import compute_regions

SIZE, FRAMES = 96, 8


def _naive_attention(layer: DecoderLayer, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(width)) per unit, unit by unit from the layer's weights."""
    w = layer.width
    out = torch.empty(x.shape[0], layer.num_units, x.shape[1], memory.shape[1])
    for u in range(layer.num_units):
        rows = slice(u * w, (u + 1) * w)
        q = x @ layer.q.weight[rows].T + layer.q.bias[rows]
        k = memory @ layer.k.weight[rows].T + layer.k.bias[rows]
        out[:, u] = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(w), dim=-1)
    return out


def test_opt_in_attention_keeps_outputs_and_equals_naive_softmax():
    torch.manual_seed(0)
    head = RegionHead(channels=24, context_length=3, num_layers=2, num_units=2, width=16)
    fmap = F.normalize(torch.randn(2, 24, 4, 3, 3), dim=1)
    queries, memory = torch.randn(2, 5, 24), head.context_tokens(fmap)
    z_default = head.translate(queries, memory)
    z, weights = head.translate_with_attention(queries, memory)
    assert torch.equal(z, z_default)
    assert weights.shape == (2, 2, 2, 5, 3 * 9)  # (layers, B, U, K, L_c * H' * W')
    x = queries
    for layer, w in zip(head.layers, weights, strict=True):
        torch.testing.assert_close(w, _naive_attention(layer, x, memory))
        # and the default (fused) attention computes exactly these weights times v, plus q
        v = layer._split(layer.v(memory))
        q = layer._split(layer.q(x))
        fused = F.scaled_dot_product_attention(q, layer._split(layer.k(memory)), v)
        torch.testing.assert_close(fused, w @ v, atol=1e-5, rtol=1e-5)
        x = layer(x, memory)


def _views(seed: int = 0) -> tuple[dict, dict, dict]:
    g = torch.Generator().manual_seed(seed)
    views = {v: torch.rand(3, FRAMES, SIZE, SIZE, generator=g) * 2 - 1 for v in "ab"}
    boxes = {}
    for v in "ab":
        xy = torch.rand(6, 2, generator=g) * 0.5
        wh = 0.15 + torch.rand(6, 2, generator=g) * 0.35
        boxes[v] = torch.cat([xy, xy + wh], dim=1)
    masks = {"a": torch.ones(6, dtype=torch.bool),
             "b": torch.tensor([True, True, False, True, True, True])}
    return views, boxes, masks


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("r3d_tiny", variant="constcl", context_length=3,
                       input_norm="clip").eval()


def test_matches_drawn_are_the_argmax_of_the_region_heads_features(model):
    views, boxes, masks = _views()
    r = compute_regions(model, views, boxes, masks, "test")
    # independently: the training forward of the whole model's region head
    with torch.no_grad():
        res4 = model.backbone.forward_trunk(torch.stack([views["a"], views["b"]]))["res4"]
        local = model.res5_local(res4)
        out = model.region_head(local[:1], local[1:], boxes["a"][None], boxes["b"][None])
    h_a, h_b = F.normalize(out["h_a"][0], dim=-1), F.normalize(out["h_b"][0], dim=-1)
    sim = h_a @ h_b.T
    a2b = sim.masked_fill(~masks["b"][None, :], -2).argmax(dim=1)
    b2a = sim.argmax(dim=0)
    torch.testing.assert_close(r.similarity, sim)
    assert r.match_a2b.tolist() == a2b.tolist() and 2 not in r.match_a2b.tolist()
    assert r.match_b2a.tolist() == b2a.tolist()

    fig = regions_figure(r, queries=[0, 4], title="t")
    c_a, c_b = box_centres(boxes["a"], SIZE), box_centres(boxes["b"], SIZE)
    drawn = {"match-a2b": set(), "match-b2a": set()}
    for artist in fig.artists:
        if isinstance(artist, ConnectionPatch) and artist.get_gid() in drawn:
            src, dst = (c_a, c_b) if artist.get_gid() == "match-a2b" else (c_b, c_a)
            i = int(np.argmin(np.linalg.norm(src - np.asarray(artist.xy1), axis=1)))
            j = int(np.argmin(np.linalg.norm(dst - np.asarray(artist.xy2), axis=1)))
            assert np.allclose(artist.xy1, src[i]) and np.allclose(artist.xy2, dst[j])
            drawn[artist.get_gid()].add((i, j))
    assert drawn["match-a2b"] == {(i, int(j)) for i, j in enumerate(a2b)}
    # box 2 of view b is invalid: it has no line of its own
    assert drawn["match-b2a"] == {(j, int(i)) for j, i in enumerate(b2a) if j != 2}


def test_attention_is_the_decoders_over_view_b_context(model):
    views, boxes, masks = _views(1)
    r = compute_regions(model, views, boxes, masks)
    head = model.region_head
    with torch.no_grad():
        res4 = model.backbone.forward_trunk(torch.stack([views["a"], views["b"]]))["res4"]
        fmap = F.normalize(model.res5_local(res4), dim=1)
        out = head(fmap[:1], fmap[1:], boxes["a"][None], boxes["b"][None])
        weights = _naive_attention(head.layers[0], out["h_a"], head.context_tokens(fmap[1:]))
    t, h, w = fmap.shape[2:]
    assert r.context_frames == [t // 2 - t // 3, t // 2, t // 2 + t // 3]
    assert r.attention.shape == (3, 3, 6, 3, h, w)
    torch.testing.assert_close(r.attention[0], weights[0].reshape(3, 6, 3, h, w))
    torch.testing.assert_close(r.attention.sum(dim=(3, 4, 5)), torch.ones(3, 3, 6))


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("viz")
    frames = np.random.default_rng(0).integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    frames = np.repeat(np.repeat(frames, 12, axis=1), 12, axis=2)  # 96 x 96 blocks
    video = write_video(root / "clip.mp4", frames, fps=25)
    dirs = {}
    for variant in ("constcl", "cvrl"):
        cfg = load_config(preset_path("demo"), [
            "model.backbone=r3d_tiny", f"model.variant={variant}", "model.context_length=3",
            f"data.size={SIZE}", f"data.clip_frames={FRAMES}", "data.num_regions=6"])
        run = root / variant
        run.mkdir()
        save_config(cfg, run / "config.yaml")
        net = model if variant == "constcl" else build_model("r3d_tiny", variant="cvrl")
        save_checkpoint({"step": 7, "model": net.state_dict(),
                         "config": json.dumps(to_dict(cfg))}, run, 7, keep=1)
        dirs[variant] = run
    return dirs, video


def test_command_draws_checkpoint_and_random_init(run_dirs, tmp_path, capsys):
    dirs, video = run_dirs
    out = tmp_path / "trained.png"
    assert main(["viz", "regions", str(dirs["constcl"]), "--video", str(video), "--out",
                 str(out), "--queries", "0,5", "--layer", "2"]) == 0
    assert "constcl, step 7" in capsys.readouterr().out and out.stat().st_size > 10_000
    rand = tmp_path / "random.png"
    assert main(["viz", "regions", str(dirs["constcl"]), "--video", str(video), "--out",
                 str(rand), "--random-init", "--seed", "3"]) == 0
    assert "random init (seed 3)" in capsys.readouterr().out and rand.is_file()


def _errors(caplog) -> list[str]:
    """The ``constcl: error:`` lines main() emitted (log records rendered as that line)."""
    return [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]


@pytest.mark.parametrize("extra, message", [
    (["--queries", "9"], "queries [9] are not boxes of view a"),
    (["--layer", "4"], "layer 4 does not exist"),
    (["--layer", "0"], "layer is 1-based"),
])
def test_bad_input_is_one_error_line(run_dirs, tmp_path, caplog, extra, message):
    dirs, video = run_dirs
    code = main(["viz", "regions", str(dirs["constcl"]), "--video", str(video), "--out",
                 str(tmp_path / "x.png"), *extra])
    errors = _errors(caplog)
    assert code == 2 and len(errors) == 1 and message in errors[0]


def test_cvrl_run_and_missing_folder_are_errors(run_dirs, tmp_path, caplog):
    dirs, video = run_dirs
    for run, message in ((dirs["cvrl"], "no region branch"), (tmp_path / "nope", "does not exist")):
        caplog.clear()
        assert main(["viz", "regions", str(run), "--video", str(video), "--out",
                     str(tmp_path / "x.png")]) == 2
        errors = _errors(caplog)
        assert len(errors) == 1 and message in errors[0]
