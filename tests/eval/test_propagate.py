"""Label propagation: constructed cases with identity features, the radius rule, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from constcl.cli import main
from constcl.eval.propagate.algorithm import (
    PropagationConfig,
    grid_positions,
    propagate_frame,
    propagate_labels,
    queue_indices,
    radius_mask,
)
from constcl.eval.propagate.task import first_frame_onehot


def _noise_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(3, h, w) random colours: with identity features every cell has a unique direction."""
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _square_labels(h: int, w: int) -> torch.Tensor:
    """(2, h, w) one-hot: background, and a 4 x 5 object at rows 3-6, columns 2-6."""
    obj = torch.zeros(h, w)
    obj[3:7, 2:7] = 1.0
    return torch.stack([1 - obj, obj])


# --------------------------------------------------------------------------- constructed cases


def test_static_video_keeps_the_first_mask() -> None:
    img = _noise_image(12, 12)
    feats = img[None].repeat(6, 1, 1, 1)  # identity features of a still video
    labels = _square_labels(12, 12)
    out = propagate_labels(feats, labels)
    assert out.shape == (6, 2, 12, 12)
    for t in range(6):
        torch.testing.assert_close(out[t], labels)


def test_shifted_pattern_moves_the_mask_along() -> None:
    """Frame t is frame 0 rolled by (t, 2t) cells (identity features); the mask rolls along."""
    img, labels = _noise_image(12, 12, seed=1), _square_labels(12, 12)
    shifts = [(t, 2 * t) for t in range(5)]
    feats = torch.stack([torch.roll(img, s, dims=(1, 2)) for s in shifts])
    # 21 key frames (first + 20 queued) each hold the exact match, so the top 10 are exact;
    # rolling wraps around, so the radius is lifted (the radius has its own tests)
    out = propagate_labels(feats, labels, PropagationConfig(radius=0))
    for t, s in enumerate(shifts):
        expected = np.roll(labels[1].numpy(), s, axis=(0, 1))
        np.testing.assert_allclose(out[t, 1].numpy(), expected, atol=1e-6)


def test_radius_mask_hand_computed() -> None:
    pos = grid_positions(3, 3)  # row-major: index = 3 * row + col
    assert pos[5].tolist() == [1.0, 2.0]
    m = radius_mask(pos, pos, 1.5)
    assert torch.nonzero(m[0]).flatten().tolist() == [0, 1, 3, 4]  # corner: diagonal 1.41
    assert m[4].all()  # centre reaches every cell
    assert torch.nonzero(m[7]).flatten().tolist() == [3, 4, 5, 6, 7, 8]
    # the boundary is exclusive (CRW keeps distance < radius)
    assert torch.nonzero(radius_mask(pos, pos, 1.0)[4]).flatten().tolist() == [4]
    assert torch.nonzero(radius_mask(pos, pos, 1.01)[4]).flatten().tolist() == [1, 3, 4, 5, 7]
    assert radius_mask(pos, pos, 1.5).T.equal(radius_mask(pos, pos, 1.5))


def _far_match_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 1 x 6 row; query cell 0's only match sits at key cell 5 (distance 5), labelled 1."""
    eye = torch.eye(6)
    query = eye  # (C, N): cell q has code e_q
    keys = eye[:, [5, 1, 2, 3, 4, 0]][None]  # key cell 5 has code e_0, key cell 0 has e_5
    labels = torch.zeros(1, 2, 6)
    labels[0, 0] = 1.0
    labels[0, :, 5] = torch.tensor([0.0, 1.0])
    return query, keys, labels, grid_positions(1, 6)


def test_radius_blocks_far_short_term_keys() -> None:
    query, keys, labels, pos = _far_match_case()
    near = propagate_frame(query, keys, labels, 0, pos, PropagationConfig(radius=3))
    assert near[:, 0].tolist() == [1.0, 0.0]  # cells 0-2 in reach, all background
    wide = propagate_frame(query, keys, labels, 0, pos, PropagationConfig(radius=6))
    # logits 1 / 0.05 = 20 for the match, 0 for the 5 other keys
    assert wide[1, 0].item() == pytest.approx(1 / (1 + 5 * math.exp(-20)), rel=1e-6)


def test_radius_does_not_apply_to_the_first_frame() -> None:
    query, keys, labels, pos = _far_match_case()
    out = propagate_frame(query, keys, labels, 1, pos, PropagationConfig(radius=3))
    assert out[1, 0].item() == pytest.approx(1 / (1 + 5 * math.exp(-20)), rel=1e-6)


def test_radius_spares_first_frame_keys_next_to_short_term_ones() -> None:
    """Key set = [first frame, one short-term frame]: only the short-term frame's far keys are
    masked, so the first frame's match at distance 5 still carries its label."""
    query, keys, labels, pos = _far_match_case()
    keys = torch.cat([keys, torch.zeros_like(keys)])         # short-term frame: no match
    labels = torch.cat([labels, torch.zeros_like(labels)])   # ... labelled nothing
    out = propagate_frame(query, keys, labels, 1, pos, PropagationConfig(radius=3, topk=10))
    # 12 keys: the match (logit 20), 6 + 4 in-reach zeros, 2 far short-term keys masked; top 10
    # keeps the match and 9 zeros
    assert out[1, 0].item() == pytest.approx(1 / (1 + 9 * math.exp(-20)), rel=1e-6)


def test_topk_keeps_only_the_best_keys() -> None:
    query, keys, labels, pos = _far_match_case()
    out = propagate_frame(query, keys, labels, 1, pos, PropagationConfig(topk=1))
    assert out[:, 0].tolist() == [0.0, 1.0]


def test_context_queue_indices() -> None:
    assert queue_indices(3, 5) == [0, 0, 0, 1, 2]  # padded with frame 0, as CRW
    assert queue_indices(25, 20) == list(range(5, 25))


def test_first_frame_onehot_area_fractions_and_void_as_background() -> None:
    ids = np.zeros((16, 16), np.uint8)
    ids[:8, :8] = 2
    ids[8:, 8:] = 255
    ids[8:12, :8] = 2  # half of the bottom-left cell
    onehot = first_frame_onehot(ids, (2, 2))
    assert onehot.shape == (3, 2, 2)  # background, object 1 (absent), object 2
    expected = torch.tensor([[[0.0, 1.0], [0.5, 1.0]], [[0.0, 0.0], [0.0, 0.0]],
                             [[1.0, 0.0], [0.5, 0.0]]])
    torch.testing.assert_close(onehot, expected, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- CLI


def _run(world: Path, out: Path, *extra: str) -> dict:
    rc = main(["eval", "propagate", "--checkpoint", "random", "--backbone", "r3d_tiny",
               "--data", str(world), "--out", str(out), "--device", "cpu",
               "--overlay-sequences", "1", "--overlay-frames", "3", *extra])
    assert rc == 0
    return json.loads((out / "results.json").read_text())


def test_propagate_cli_end_to_end_and_cache(world: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "prop"
    res = _run(world, out)
    assert res["num_sequences"] == 2 and res["stage"] == "res4" and res["stride"] == 8
    assert res["propagation"] == {"temperature": 0.05, "topk": 10, "context": 20,
                                  "radius": 12.0, "max_affinity_elems": 1 << 25}
    for key in ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"):
        assert key in res["metrics"]
    for key in ("J&F-Mean", "J-Mean", "F-Mean"):
        assert 0.0 <= res["metrics"][key] <= 1.0
    assert len(res["per_sequence"]) == 2 and res["num_objects"] == len(res["per_object"])
    seq = next(iter(res["per_sequence"]))
    assert (out / "overlays" / f"{seq}.png").stat().st_size > 0
    assert len(list((out / "overlays").glob("*.png"))) == 1
    masks = sorted((out / "masks" / seq).glob("*.png"))
    assert len(masks) == 32
    assert np.asarray(Image.open(masks[5])).max() <= res["per_sequence"][seq]["objects"]
    assert "J&F-Mean" in capsys.readouterr().out
    # a rerun with other propagation settings reads the cached features
    cached = {p: p.stat().st_mtime_ns for p in (out / "cache").glob("*.npz")}
    assert len(cached) == 2
    res2 = _run(world, out, "--temperature", "0.07", "--topk", "5", "--no-write-masks")
    assert res2["propagation"]["temperature"] == 0.07
    assert {p: p.stat().st_mtime_ns for p in (out / "cache").glob("*.npz")} == cached


def test_frame_0_of_the_output_is_the_given_mask(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "prop0"
    _run(world, out, "--sequences", "1", "--stage", "res3")
    seq = next((out / "masks").iterdir())
    gt_file = world / "davis" / "Annotations" / "480p" / seq.name / "00000.png"
    np.testing.assert_array_equal(np.asarray(Image.open(seq / "00000.png")),
                                  np.asarray(Image.open(gt_file)))
