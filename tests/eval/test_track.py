"""``constcl eval track``: OTB reading, the frame encoder, and an end-to-end CLI run."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from constcl.cli import main
from constcl.eval.frame_encoder import FrameEncoder, collapse_time, cpu_threads
from constcl.eval.track.data import load_sequences, read_boxes, spread_subset
from constcl.models.r3d import build_backbone

# --------------------------------------------------------------------------- OTB files


def test_read_boxes_accepts_comma_tab_and_space(tmp_path: Path) -> None:
    f = tmp_path / "groundtruth_rect.txt"
    f.write_text("1,2,3,4\n5\t6\t7\t8\n9 10  11 12\r\n13, 14, 15, 16\n\n")
    np.testing.assert_array_equal(read_boxes(f), np.arange(1, 17).reshape(4, 4))
    f.write_text("1,2,3\n")
    with pytest.raises(ValueError, match="4 numbers"):
        read_boxes(f)


def _fake_seq(root: Path, name: str, frames: int, gts: dict[str, str]) -> None:
    (root / name / "img").mkdir(parents=True)
    for i in range(frames):
        Image.new("L", (8, 8)).save(root / name / "img" / f"{i + 1:04d}.jpg")
    for fname, text in gts.items():
        (root / name / fname).write_text(text)


def test_otb_targets_ranges_and_empty_files(tmp_path: Path) -> None:
    _fake_seq(tmp_path, "Jogging", 2, {"groundtruth_rect.1.txt": "1,1,2,2\n1,1,2,2\n",
                                       "groundtruth_rect.2.txt": "3 3 2 2\n3 3 2 2\n"})
    _fake_seq(tmp_path, "Human4", 2, {"groundtruth_rect.1.txt": "",
                                      "groundtruth_rect.2.txt": "1\t1\t4\t4\n1\t1\t4\t4\n"})
    _fake_seq(tmp_path, "Football1", 76, {"groundtruth_rect.txt": "1,1,2,2\n" * 74})
    seqs = {s.name: s for s in load_sequences(tmp_path)}
    assert sorted(seqs) == ["Football1", "Human4", "Jogging.1", "Jogging.2"]
    assert seqs["Jogging.2"].boxes[0].tolist() == [3, 3, 2, 2]
    assert len(seqs["Football1"].frames) == 74  # frames 1-74 of 76 (got10k's range)
    assert seqs["Football1"].frames[-1].name == "0074.jpg"
    # 2 of the 4 sorted targets, evenly spaced: positions 0 and 2
    assert [s.name for s in load_sequences(tmp_path, limit=2)] == ["Football1", "Jogging.1"]


def test_spread_subset_covers_the_whole_list() -> None:
    items = list(range(10))
    assert spread_subset(items, 3) == [0, 3, 6]  # floor(i * 10 / 3)
    assert spread_subset(items, 4) == [0, 2, 5, 7]
    assert spread_subset(items, 10) == items and spread_subset(items, 50) == items
    assert spread_subset(items, None) == items
    # a class-sorted list of 12 classes x 20 targets: 24 picks cover every class twice
    names = [f"c{c:02d}_{i:02d}" for c in range(12) for i in range(20)]
    picked = [n[:3] for n in spread_subset(names, 24)]
    assert all(picked.count(f"c{c:02d}") == 2 for c in range(12))


def test_otb_count_mismatch_is_an_error(tmp_path: Path) -> None:
    _fake_seq(tmp_path, "Basketball", 3, {"groundtruth_rect.txt": "1,1,2,2\n"})
    with pytest.raises(ValueError, match="3 images but 1 boxes"):
        load_sequences(tmp_path)


# --------------------------------------------------------------------------- frame encoder


def _randomised_net(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_backbone(name)
    for m in net.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize("stage", ["res2", "res3", "res4", "res5"])
def test_static_frame_equals_middle_of_long_repeated_clip(stage: str) -> None:
    net = _randomised_net("r3d_tiny")
    x = torch.rand(2, 3, 40, 56) * 2 - 1
    static = FrameEncoder(net, stage, "static")(x)
    # 16 copies: the middle step sees no temporal padding through res5 of r3d_tiny.
    enc = FrameEncoder(net, stage, "repeat", clip_len=16)
    torch.testing.assert_close(static, enc(x), rtol=1e-4, atol=1e-5)
    # a 2-frame clip is dominated by zero padding and differs
    assert not torch.allclose(static, FrameEncoder(net, stage, "repeat", clip_len=2)(x),
                              atol=1e-3)


def test_frame_encoder_applies_the_networks_input_norm() -> None:
    """A network trained with input_norm=clip sees frames normalised the same way: its static
    frame map equals the middle of a long still clip through the network itself."""
    torch.manual_seed(0)
    net = build_backbone("r3d_tiny", input_norm="clip").eval()
    x = torch.rand(2, 3, 40, 56) * 0.6 - 0.5
    with torch.no_grad():
        want = net.forward_features(x.unsqueeze(2).expand(-1, -1, 16, -1, -1).contiguous())
    got = FrameEncoder(net, "res3", "static")(x)
    middle = want["res3"].shape[2] // 2
    torch.testing.assert_close(got, want["res3"][:, :, middle], rtol=1e-4, atol=1e-5)
    torch.manual_seed(0)
    plain = build_backbone("r3d_tiny", input_norm="none").eval()  # the same weights
    assert not torch.allclose(FrameEncoder(plain, "res3", "static")(x), got, atol=1e-3)


def test_encoder_strides_and_shapes() -> None:
    net = _randomised_net("r3d_tiny")
    x = torch.zeros(1, 3, 127, 255)
    for stage, stride, channels in [("res2", 4, 16), ("res3", 8, 32), ("res4", 8, 32),
                                    ("res5", 8, 64)]:
        enc = FrameEncoder(net, stage)
        assert enc.stride == stride and enc.out_channels == channels
        assert enc(x).shape == (1, channels, -(-127 // stride), -(-255 // stride))
    # the encoder works on a copy: the original network keeps its strides
    assert net.forward_features(torch.zeros(1, 3, 4, 64, 64))["res5"].shape[-1] == 2


def test_dilated_res4_matches_undilated_at_even_cells() -> None:
    """Removing res4's stride keeps the values of the strided grid at every other cell."""
    net = _randomised_net("r3d_tiny")  # res4 has one block: no dilated conv after the stride
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    dense = FrameEncoder(net, "res4")(x)
    res4 = copy.deepcopy(net.res4)
    collapse_time(res4)  # the static-frame res4 with its stride 2
    sparse = res4(FrameEncoder(net, "res3")(x)[:, :, None])[:, :, 0]
    assert dense.shape[-1] == 8 and sparse.shape[-1] == 4
    torch.testing.assert_close(dense[:, :, ::2, ::2], sparse, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- CLI


def test_track_cli_end_to_end(world: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "track"
    rc = main(["eval", "track", "--checkpoint", "random", "--backbone", "r3d_tiny",
               "--data", str(world), "--out", str(out), "--device", "cpu",
               "--sequences", "2", "--stage", "res3"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    for key in ("metrics", "per_sequence", "curves", "tracker", "stage", "stride", "frame_mode"):
        assert key in res
    assert set(res["metrics"]) == {"precision_20", "success_auc", "success_rate", "frames", "fps"}
    assert res["num_sequences"] == 2 and len(res["per_sequence"]) == 2
    assert res["stage"] == "res3" and res["stride"] == 8
    assert res["tracker"]["exemplar_sz"] == 127 and res["tracker"]["scale_step"] == 1.0375
    for scores in [res["metrics"], *res["per_sequence"].values()]:
        assert 0.0 <= scores["precision_20"] <= 1.0
        assert 0.0 <= scores["success_auc"] <= 20 / 21 + 1e-9
    assert len(res["curves"]["precision"]) == 51 and len(res["curves"]["success"]) == 21
    for png in ("precision_plots.png", "success_plots.png"):
        assert (out / png).stat().st_size > 0
    name = next(iter(res["per_sequence"]))
    assert np.loadtxt(out / "boxes" / f"{name}.txt", delimiter=",").shape == (32, 4)
    assert "precision@20px" in capsys.readouterr().out


def test_cpu_threads_restores_the_setting() -> None:
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(0):
        assert torch.get_num_threads() == before
