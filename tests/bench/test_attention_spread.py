"""bench/attention_spread.py: the logit-spread statistics against a hand-computed case, and the
recording hook leaves the model's output unchanged."""

import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import attention_spread  # noqa: E402

from constcl.models import build_model, region_head  # noqa: E402


def test_layer_stats_by_hand():
    q = torch.tensor([[1.0, 0.0]]).view(1, 1, 1, 2)
    k = torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]]).view(1, 1, 3, 2)
    s = attention_spread.layer_stats(q, k, width=2)
    # logits q.k / sqrt(2) = 0, 2/sqrt2, 4/sqrt2: sample standard deviation sqrt(2)
    assert math.isclose(s["logit_spread"], math.sqrt(2), rel_tol=1e-6)
    # keys minus their mean (2, 0): norms 2, 0, 2
    assert math.isclose(s["key_spread"], 4 / 3, rel_tol=1e-6)
    assert math.isclose(s["query_norm"], 1.0, rel_tol=1e-6)


def test_spreads_per_layer_and_the_forward_is_untouched():
    torch.manual_seed(0)
    model = build_model("r3d_tiny", variant="constcl", local_source="y", context_length=3)
    views = torch.rand(2, 3, 8, 64, 64) * 2 - 1, torch.rand(2, 3, 8, 64, 64) * 2 - 1
    boxes = torch.tensor([[0.1, 0.1, 0.6, 0.6], [0.3, 0.2, 0.9, 0.8]]).expand(2, 2, 4)
    inputs = (*views, boxes.clone(), boxes.clone())
    original = region_head.DecoderLayer.forward
    got = attention_spread.spreads(model, inputs)
    assert len(got["layers"]) == len(model.region_head.layers)
    assert region_head.DecoderLayer.forward is original  # the hook is removed again
    model.eval()
    with torch.no_grad():
        plain = model(*inputs)
    assert math.isclose(got["attn_entropy"], plain["attn_entropy"].item(), rel_tol=1e-6)
    for layer in got["layers"]:
        assert layer["logit_spread"] > 0 and layer["key_spread"] > 0
