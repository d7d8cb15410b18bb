import math

import pytest
import torch
import torch.nn.functional as F

from constcl.models import DecoderLayer, PositionalCode, RegionHead, context_indices, roi_features


def bilinear(fmap: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """Bilinear sample of (C, H, W) at (y, x) where cell k sits at k; clamped to the border."""
    _, h, w = fmap.shape
    y, x = min(max(y, 0.0), h - 1.0), min(max(x, 0.0), w - 1.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * fmap[:, y0, x0] + (1 - ly) * lx * fmap[:, y0, x1]
            + ly * (1 - lx) * fmap[:, y1, x0] + ly * lx * fmap[:, y1, x1])


def reference_roi(fmap: torch.Tensor, box: list[float], bins: int = 4) -> torch.Tensor:
    """Mean of bins x bins bilinear samples at the bin centres of a normalised box."""
    _, h, w = fmap.shape
    x1, y1, x2, y2 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    bw, bh = (x2 - x1) / bins, (y2 - y1) / bins
    samples = [bilinear(fmap, y1 + (i + 0.5) * bh, x1 + (j + 0.5) * bw)
               for i in range(bins) for j in range(bins)]
    return torch.stack(samples).mean(dim=0)


def test_roi_features_on_a_ramp_by_hand():
    # f[y, x] = x on a 4 x 4 map. Box (0, 0, 0.5, 0.5): x from 0 to 2 in cell units, bins of
    # 0.5, samples at 0.25, 0.75, 1.25, 1.75 -> mean 1.0. Box (0.5, 0, 1, 1): samples at
    # 2.25, 2.75, 3.25 -> clamped 3, 3.75 -> 3 -> mean (2.25 + 2.75 + 3 + 3) / 4 = 2.75.
    ramp = torch.arange(4.0).expand(1, 1, 4, 4).clone()
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 1.0]]])
    out = roi_features(ramp, boxes)
    assert out.shape == (1, 2, 1)
    assert out[0, :, 0].tolist() == pytest.approx([1.0, 2.75])


@pytest.mark.parametrize("boxes", [
    [[0.1, 0.2, 0.6, 0.9], [0.3, 0.3, 0.35, 0.32]],     # ordinary; smaller than one cell
    [[0.0, 0.0, 1.0, 1.0], [0.7, 0.8, 0.999, 0.999]],   # touching the borders
    [[0.0, 0.5, 0.05, 0.55], [0.95, 0.0, 1.0, 0.04]],   # tiny boxes in the corners
])
def test_roi_features_match_bilinear_reference(boxes):
    torch.manual_seed(0)
    fmap = torch.randn(2, 5, 7, 6)
    box_t = torch.tensor([boxes, boxes[::-1]])
    out = roi_features(fmap, box_t)
    for b in range(2):
        for k in range(2):
            expected = reference_roi(fmap[b], box_t[b, k].tolist())
            torch.testing.assert_close(out[b, k], expected, rtol=1e-5, atol=1e-5)


def test_roi_features_random_boxes_match_reference():
    gen = torch.Generator().manual_seed(1)
    fmap = torch.randn(3, 4, 7, 7, generator=gen)
    xy = torch.rand(3, 6, 2, generator=gen)
    wh = torch.rand(3, 6, 2, generator=gen) * 0.5
    boxes = torch.cat([xy, (xy + wh).clamp(max=0.999)], dim=2)
    out = roi_features(fmap, boxes)
    for b in range(3):
        for k in range(6):
            expected = reference_roi(fmap[b], boxes[b, k].tolist())
            torch.testing.assert_close(out[b, k], expected, rtol=1e-5, atol=1e-5)


def test_roi_features_rejects_bad_shapes():
    with pytest.raises(ValueError, match="boxes"):
        roi_features(torch.zeros(1, 2, 3, 3), torch.zeros(1, 4))


@pytest.mark.parametrize("length, expected", [(1, [4]), (3, [2, 4, 6]), (5, [2, 3, 4, 5, 6])])
def test_context_indices_for_eight_frames(length, expected):
    assert context_indices(8, length) == expected


@pytest.mark.parametrize("length", [0, -3, 2, 4])
def test_context_indices_reject_even_and_non_positive(length):
    with pytest.raises(ValueError, match="context_length"):
        context_indices(8, length)


def test_region_head_rejects_even_context_length():
    with pytest.raises(ValueError, match="context_length"):
        RegionHead(16, context_length=4)


def test_positional_code_uses_centred_coordinates():
    torch.manual_seed(0)
    code = PositionalCode()
    out = code(5, 2, 3, torch.device("cpu"))
    assert out.shape == (30, 16)
    # token (t, y, x) in raster order; centred t in -2..2, y in {-0.5, 0.5}, x in {-1, 0, 1}
    t, y, x = 4, 1, 0
    row = out[t * 6 + y * 3 + x]
    torch.testing.assert_close(row[:8], code.temporal(torch.tensor([2.0])))
    torch.testing.assert_close(row[8:], code.spatial(torch.tensor([0.5, -1.0])))


def naive_decoder_layer(layer: DecoderLayer, x: torch.Tensor, memory: torch.Tensor):
    """Each unit separately, written out with explicit softmax and layer norm."""
    w = layer.width
    outs = []
    for u in range(layer.num_units):
        sl = slice(u * w, (u + 1) * w)
        q = x @ layer.q.weight[sl].T + layer.q.bias[sl]
        k = memory @ layer.k.weight[sl].T + layer.k.bias[sl]
        v = memory @ layer.v.weight[sl].T + layer.v.bias[sl]
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(w), dim=-1)
        o = attn @ v + q
        mu = o.mean(-1, keepdim=True)
        var = ((o - mu) ** 2).mean(-1, keepdim=True)
        o = (o - mu) / torch.sqrt(var + 1e-12) * layer.norm_weight[u] + layer.norm_bias[u]
        hidden = F.gelu(o @ layer.w1[u].T + layer.b1[u])
        outs.append(hidden @ layer.w2[u].T + layer.b2[u])
    return torch.cat(outs, dim=-1)


def test_decoder_layer_equals_independent_units():
    torch.manual_seed(0)
    layer = DecoderLayer(query_dim=12, memory_dim=10, num_units=3, width=8)
    with torch.no_grad():  # make the affine parts non-trivial
        layer.norm_weight.uniform_(0.5, 1.5)
        layer.norm_bias.uniform_(-0.5, 0.5)
    x, memory = torch.randn(2, 5, 12), torch.randn(2, 9, 10)
    torch.testing.assert_close(layer(x, memory), naive_decoder_layer(layer, x, memory),
                               rtol=1e-5, atol=1e-5)


def test_region_head_reads_context_of_the_other_view_only():
    torch.manual_seed(0)
    head = RegionHead(channels=6, context_length=3, num_layers=2, num_units=2, width=8).eval()
    fa, fb = torch.randn(2, 6, 8, 4, 4), torch.randn(2, 6, 8, 4, 4)
    boxes = torch.tensor([[0.1, 0.1, 0.7, 0.8], [0.3, 0.2, 0.5, 0.9]]).expand(2, 2, 4)
    base = head(fa, fb, boxes, boxes)
    assert base["z_a2b"].shape == (2, 2, 6) and base["h_a"].shape == (2, 2, 6)
    fb_off = fb.clone()
    fb_off[:, :, 0] += 5.0  # frame 0 is neither context (2, 4, 6) nor key frame
    fa_off = fa.clone()
    fa_off[:, :, 7] += 5.0
    torch.testing.assert_close(head(fa_off, fb_off, boxes, boxes)["z_a2b"], base["z_a2b"])
    fb_ctx = fb.clone()
    fb_ctx[:, :, 6] += 5.0  # a context frame of view b changes a->b only through its memory
    out = head(fa, fb_ctx, boxes, boxes)
    assert not torch.allclose(out["z_a2b"], base["z_a2b"])
    torch.testing.assert_close(out["h_a"], base["h_a"])


def test_region_head_targets_are_roi_features_of_the_normalised_key_frame():
    torch.manual_seed(0)
    head = RegionHead(channels=6, context_length=1, num_layers=1, num_units=1, width=8)
    fa, fb = torch.randn(1, 6, 8, 4, 4), torch.randn(1, 6, 8, 4, 4)
    boxes = torch.tensor([[[0.2, 0.1, 0.9, 0.6]]])
    out = head(fa, fb, boxes, boxes)
    key = fa[0, :, 4] / fa[0, :, 4].norm(dim=0, keepdim=True)
    torch.testing.assert_close(out["h_a"][0, 0], reference_roi(key, boxes[0, 0].tolist()),
                               rtol=1e-5, atol=1e-5)


def test_attention_entropy_by_hand():
    # One layer, one unit of width 1: q = x (query 1.0), k = memory's first feature, so the
    # logits are the memory values. Two tokens with logits log 3 and 0: p = (3/4, 1/4),
    # H = -(3/4 log 3/4 + 1/4 log 1/4), relative entropy H / log 2 = 0.8113.
    head = RegionHead(channels=1, context_length=1, num_layers=1, num_units=1, width=1)
    layer = head.layers[0]
    with torch.no_grad():
        layer.q.weight.fill_(1.0), layer.q.bias.zero_()
        layer.k.weight.zero_(), layer.k.bias.zero_()
        layer.k.weight[0, 0] = 1.0
    queries = torch.ones(1, 1, 1)
    memory = torch.zeros(1, 2, 17)
    memory[0, 0, 0] = math.log(3.0)
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert head.attention_entropy(queries, memory).item() == pytest.approx(expected, rel=1e-5)
    memory[0, 0, 0] = 0.0  # equal logits: uniform attention, relative entropy 1
    assert head.attention_entropy(queries, memory).item() == pytest.approx(1.0, rel=1e-6)
    memory[0, 0, 0] = 60.0  # one token takes all the weight
    assert head.attention_entropy(queries, memory).item() == pytest.approx(0.0, abs=1e-6)


def test_model_reports_attention_entropy_over_valid_boxes_only():
    from constcl.models.constcl import _attention_statistic
    a2b = torch.tensor([[0.2, 0.9]])
    b2a = torch.tensor([[0.4, 0.5]])
    mask_a = torch.tensor([[True, False]])
    mask_b = torch.tensor([[True, True]])
    got = _attention_statistic(a2b, b2a, mask_a, mask_b).item()
    assert got == pytest.approx((0.2 + 0.4 + 0.5) / 3)
    none = torch.zeros(1, 2, dtype=torch.bool)
    assert _attention_statistic(a2b, b2a, none, none).item() == 1.0


def test_forward_entropy_equals_the_one_from_the_written_out_attention():
    """The forward's attn_entropy_* (from its own q and k) equals the entropy of the weights
    that translate_with_attention writes out, computed here by hand, layer by layer."""
    torch.manual_seed(0)
    head = RegionHead(channels=16, context_length=3, num_layers=2, num_units=2, width=8)
    fa, fb = torch.randn(2, 16, 4, 3, 3), torch.randn(2, 16, 4, 3, 3)
    boxes = torch.tensor([[[0.1, 0.1, 0.6, 0.7], [0.3, 0.2, 0.9, 0.9]]]).repeat(2, 1, 1)
    out = head(fa, fb, boxes, boxes)
    h_a = roi_features(F.normalize(fa, dim=1)[:, :, 2], boxes)
    _, weights = head.translate_with_attention(h_a, head.context_tokens(F.normalize(fb, dim=1)))
    n = weights.shape[-1]
    by_hand = torch.zeros(2, 2)
    for layer in range(2):
        for unit in range(2):
            p = weights[layer, :, unit]  # (B, K, N)
            by_hand += -(p * p.log()).sum(-1) / math.log(n) / 4
    torch.testing.assert_close(out["attn_entropy_a2b"], by_hand, rtol=1e-5, atol=1e-6)
