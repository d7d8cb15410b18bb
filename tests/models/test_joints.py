"""Tests at the joints of ConSTCL: heads -> losses -> total, and the region head end to end.

Every check compares the model with an independent computation from docs/spec.md sections 2-3:
the naive loop losses of tests/losses/naive.py, a token-by-token reference of the region head
(reading only the head's parameters), and gradient reachability of the two loss paths.
"""

import math

import pytest
import torch

from constcl.models import LossWeights, RegionHead, build_model
from tests.losses.naive import naive_global, naive_region
from tests.models.test_region_head import reference_roi

# Non-default, pairwise distinct hyper-parameters: a weight or temperature that reaches the
# wrong loss (or none) changes the total.
WEIGHTS = LossWeights(global_temperature=0.3, region_temperature=0.7, global_weight=0.5,
                      region_weight=2.5)
TRUNK = ("stem", "res2", "res3", "res4")


def make_batch(b=3, t=8, size=64, k=4, seed=0):
    """Two views, independent boxes per view, and different masks per view (some invalid)."""
    gen = torch.Generator().manual_seed(seed)
    views = [torch.rand(b, 3, t, size, size, generator=gen) * 2 - 1 for _ in range(2)]
    xy = torch.rand(2, b, k, 2, generator=gen) * 0.6
    wh = 0.15 + torch.rand(2, b, k, 2, generator=gen) * 0.25
    boxes = torch.cat([xy, (xy + wh).clamp(max=0.999)], dim=-1)
    mask_a = torch.tensor([[True, False, True, True], [True, True, False, True],
                           [False, True, True, False]])[:b, :k]
    mask_b = torch.tensor([[True, True, True, False], [False, True, True, True],
                           [True, False, True, True]])[:b, :k]
    return views[0], views[1], boxes[0], boxes[1], mask_a, mask_b


class Hooks:
    """Records the inputs and outputs of the global and region heads during one forward."""

    def __init__(self, model):
        self.records = {}
        self.handles = [model.global_head.register_forward_hook(self._hook("global"))]
        if model.region_head is not None:
            self.handles.append(model.region_head.register_forward_hook(self._hook("region")))

    def _hook(self, name):
        def hook(module, inputs, output):
            if isinstance(output, dict):
                output = {k: v.detach().clone() for k, v in output.items()}
            else:
                output = output.detach().clone()
            self.records[name] = ([x.detach().clone() for x in inputs], output)
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("variant", ["constcl", "region", "cvrl"])
def test_total_loss_recomputed_from_hooked_head_outputs(variant):
    torch.manual_seed(0)
    model = build_model("r3d_tiny", variant=variant, context_length=3, losses=WEIGHTS)
    batch = make_batch()
    va, vb, ba, bb, ma, mb = batch
    assert not torch.equal(ma, mb)
    hooks = Hooks(model)
    out = model(*batch)
    hooks.remove()

    bsz = va.shape[0]
    emb = hooks.records["global"][1]
    assert emb.shape[0] == 2 * bsz
    ref_global = naive_global(emb[:bsz], emb[bsz:], WEIGHTS.global_temperature)
    torch.testing.assert_close(out["loss_global"].detach(), ref_global, rtol=1e-5, atol=1e-5)
    cos = torch.nn.functional.normalize(emb[:bsz], dim=1) @ \
        torch.nn.functional.normalize(emb[bsz:], dim=1).T
    accuracy = sum(int(cos[i].argmax()) == i for i in range(bsz)) / bsz
    assert out["global_accuracy"].item() == pytest.approx(accuracy)
    expected_total = WEIGHTS.global_weight * ref_global
    if variant == "cvrl":
        assert "region" not in hooks.records and "loss_region" not in out
    else:
        heads = hooks.records["region"][1]
        ref = naive_region(heads["z_a2b"], heads["z_b2a"], heads["h_a"], heads["h_b"], ma, mb,
                           WEIGHTS.region_temperature)
        torch.testing.assert_close(out["loss_region"].detach(), ref["loss"], rtol=1e-5,
                                   atol=1e-5)
        for key in ("pos_sim_mean", "pos_sim_min", "pos_sim_max", "neg_sim_mean"):
            assert out[f"region_{key}"].item() == pytest.approx(ref[key], rel=1e-4, abs=1e-5)
        expected_total = expected_total + WEIGHTS.region_weight * ref["loss"]
        # The check has power: exchanging the directions, ignoring the masks or using the
        # other temperature each gives a different region loss on this batch.
        mutants = [
            naive_region(heads["z_b2a"], heads["z_a2b"], heads["h_a"], heads["h_b"], ma, mb,
                         WEIGHTS.region_temperature)["loss"],
            naive_region(heads["z_a2b"], heads["z_b2a"], heads["h_a"], heads["h_b"],
                         torch.ones_like(ma), torch.ones_like(mb),
                         WEIGHTS.region_temperature)["loss"],
            naive_region(heads["z_a2b"], heads["z_b2a"], heads["h_a"], heads["h_b"], mb, ma,
                         WEIGHTS.region_temperature)["loss"],
            naive_region(heads["z_a2b"], heads["z_b2a"], heads["h_a"], heads["h_b"], ma, mb,
                         WEIGHTS.global_temperature)["loss"],
        ]
        for m in mutants:
            assert abs(m.item() - ref["loss"].item()) > 1e-3
    torch.testing.assert_close(out["loss"].detach(), expected_total, rtol=1e-5, atol=1e-5)


def trunk_by_hand(backbone, x):
    """Stem then res2..res4, called module by module (not through forward_trunk)."""
    for name in TRUNK:
        x = getattr(backbone, name)(x)
    return x


@pytest.mark.parametrize("variant, local_source", [("constcl", "y"), ("constcl", "shared"),
                                                   ("constcl", "res4"), ("region", "y")])
def test_heads_read_the_right_maps_and_boxes(variant, local_source):
    # Eval mode (BatchNorm on running statistics) makes each video's maps independent of the
    # rest of the batch, so they can be recomputed one view at a time.
    torch.manual_seed(0)
    model = build_model("r3d_tiny", variant=variant, local_source=local_source,
                        context_length=3, losses=WEIGHTS).eval()
    va, vb, ba, bb, ma, mb = make_batch(b=2)
    hooks = Hooks(model)
    with torch.no_grad():
        model(va, vb, ba, bb, ma[:2], mb[:2])
        hooks.remove()
        res4 = {v: trunk_by_hand(model.backbone, x) for v, x in (("a", va), ("b", vb))}
        res5 = {v: model.backbone.res5(r) for v, r in res4.items()}
        if local_source == "y":
            local = {v: model.res5_local(r) for v, r in res4.items()}
        elif local_source == "shared":
            local = res5
        else:
            local = res4
    g_in = hooks.records["global"][0][0]
    torch.testing.assert_close(g_in, torch.cat([res5["a"], res5["b"]]), rtol=1e-5, atol=1e-6)
    fmap_a, fmap_b, boxes_a, boxes_b = hooks.records["region"][0]
    torch.testing.assert_close(fmap_a, local["a"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fmap_b, local["b"], rtol=1e-5, atol=1e-6)
    assert torch.equal(boxes_a, ba) and torch.equal(boxes_b, bb)
    if local_source == "y":  # guard: the two res5 copies really differ
        assert not torch.allclose(local["a"], res5["a"], atol=1e-3)


# --- the region head against a token-by-token reference of docs/spec.md section 2 ---------

KEY_FRAME = 4  # T' = 8: index T'/2
CONTEXT = {1: [4], 3: [2, 4, 6], 5: [2, 3, 4, 5, 6]}  # docs/spec.md section 2, T' = 8


def linear(weight, bias, x):
    return weight @ x + bias


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def unit_norm(v):
    return v / v.norm()


def normalised_map(f):
    """(C, T, H, W): every (t, y, x) token divided by its L2 norm, one token at a time."""
    out = torch.empty_like(f)
    _, t, h, w = f.shape
    for ti in range(t):
        for y in range(h):
            for x in range(w):
                out[:, ti, y, x] = unit_norm(f[:, ti, y, x])
    return out


def positional_code(head, ti, y, x, length, h, w):
    """Centred (t, y, x); t -> Linear 1->4, ReLU, Linear 4->8; (y, x) -> Linear 2->4 ..."""
    tc = torch.tensor([ti - (length - 1) / 2])
    sc = torch.tensor([y - (h - 1) / 2, x - (w - 1) / 2])
    tmp, spa = head.pos_code.temporal, head.pos_code.spatial
    t_code = linear(tmp[2].weight, tmp[2].bias, linear(tmp[0].weight, tmp[0].bias, tc).clamp(min=0))
    s_code = linear(spa[2].weight, spa[2].bias, linear(spa[0].weight, spa[0].bias, sc).clamp(min=0))
    return torch.cat([t_code, s_code])


def memory_tokens(head, fnorm, frames):
    """Context tokens of one video in (t, y, x) order: [C channels, 8 t-code, 8 (y, x)-code]."""
    _, _, h, w = fnorm.shape
    tokens = []
    for ti, t in enumerate(frames):
        for y in range(h):
            for x in range(w):
                code = positional_code(head, ti, y, x, len(frames), h, w)
                tokens.append(torch.cat([fnorm[:, t, y, x], code]))
    return tokens


def decoder_unit(layer, u, x, memory):
    """One unit for one query: o = LN(softmax(q k^T / sqrt(d)) v + q); W2 GELU(W1 o)."""
    d = layer.width
    rows = slice(u * d, (u + 1) * d)
    q = linear(layer.q.weight[rows], layer.q.bias[rows], x)
    keys = [linear(layer.k.weight[rows], layer.k.bias[rows], m) for m in memory]
    values = [linear(layer.v.weight[rows], layer.v.bias[rows], m) for m in memory]
    scores = torch.stack([(q * k).sum() / math.sqrt(d) for k in keys])
    weights = torch.exp(scores - scores.max())
    weights = weights / weights.sum()
    o = sum(wt * v for wt, v in zip(weights, values, strict=True)) + q
    mu = o.mean()
    var = ((o - mu) ** 2).mean()
    o = (o - mu) / torch.sqrt(var + 1e-12) * layer.norm_weight[u] + layer.norm_bias[u]
    hidden = gelu(linear(layer.w1[u], layer.b1[u], o))
    return linear(layer.w2[u], layer.b2[u], hidden)


def reference_head(head, fmap_a, fmap_b, boxes_a, boxes_b, reverse_context=False):
    """z_a2b, z_b2a, h_a, h_b (B, K, C) of the docs/spec.md section 2 head, token by token."""
    frames = CONTEXT[head.context_length]
    if reverse_context:
        frames = frames[::-1]
    out = {name: [] for name in ("h_a", "h_b", "z_a2b", "z_b2a")}
    for i in range(fmap_a.shape[0]):
        fa, fb = normalised_map(fmap_a[i]), normalised_map(fmap_b[i])
        h_a = [reference_roi(fa[:, KEY_FRAME], box.tolist()) for box in boxes_a[i]]
        h_b = [reference_roi(fb[:, KEY_FRAME], box.tolist()) for box in boxes_b[i]]
        for name, queries, other in (("a2b", h_a, fb), ("b2a", h_b, fa)):
            memory = memory_tokens(head, other, frames)
            zs = []
            for x in queries:
                for layer in head.layers:
                    x = torch.cat([decoder_unit(layer, u, x, memory)
                                   for u in range(layer.num_units)])
                zs.append(linear(head.proj.weight, head.proj.bias, x))
            out[f"z_{name}"].append(torch.stack(zs))
        out["h_a"].append(torch.stack(h_a))
        out["h_b"].append(torch.stack(h_b))
    return {k: torch.stack(v) for k, v in out.items()}


def head_inputs(channels, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # H' != W' so that a (y, x) mix-up changes shapes or codes; views and boxes independent.
    fmap_a = torch.randn(2, channels, 8, 3, 2, generator=gen)
    fmap_b = torch.randn(2, channels, 8, 3, 2, generator=gen) * 1.5 + 0.3
    xy = torch.rand(2, 2, 3, 2, generator=gen) * 0.5
    wh = 0.2 + torch.rand(2, 2, 3, 2, generator=gen) * 0.4
    boxes = torch.cat([xy, (xy + wh).clamp(max=0.999)], dim=-1)
    return fmap_a, fmap_b, boxes[0], boxes[1]


@pytest.mark.parametrize("channels, context_length, layers, units, width", [
    (6, 3, 3, 3, 8), (6, 5, 2, 2, 8), (6, 1, 1, 3, 8), (16, 3, 3, 3, 128)])
def test_region_head_matches_token_by_token_reference(channels, context_length, layers, units,
                                                      width):
    torch.manual_seed(1)
    head = RegionHead(channels, context_length, layers, units, width)
    with torch.no_grad():
        # Non-trivial LayerNorm affine parts, a strong positional code and sharp attention: with
        # near-uniform attention the output is the mean of the values, which does not depend on
        # which code goes with which token, so the test could not see a wrong pairing.
        for layer in head.layers:
            layer.norm_weight.uniform_(0.5, 1.5)
            layer.norm_bias.uniform_(-0.5, 0.5)
            layer.q.weight.mul_(4.0)
            layer.k.weight.mul_(4.0)
        for p in head.pos_code.parameters():
            p.uniform_(-1.0, 1.0)
    fmap_a, fmap_b, boxes_a, boxes_b = head_inputs(channels)
    with torch.no_grad():
        out = head(fmap_a, fmap_b, boxes_a, boxes_b)
        ref = reference_head(head, fmap_a, fmap_b, boxes_a, boxes_b)
        for key in ("h_a", "h_b", "z_a2b", "z_b2a"):
            torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-5, msg=key)
        # power of the check: the other view's context or a reversed context order would differ
        assert not torch.allclose(out["z_a2b"], out["z_b2a"], atol=1e-3)
        swapped = head(fmap_b, fmap_a, boxes_a, boxes_b)["z_a2b"]
        assert not torch.allclose(swapped, ref["z_a2b"], atol=1e-3)
        if context_length > 1:
            reversed_ref = reference_head(head, fmap_a, fmap_b, boxes_a, boxes_b,
                                          reverse_context=True)
            assert not torch.allclose(reversed_ref["z_a2b"], ref["z_a2b"], atol=1e-3)


def reference_head_h(fmap_a, fmap_b, boxes_a, boxes_b):
    h = {"h_a": [], "h_b": []}
    for i in range(fmap_a.shape[0]):
        for name, f, boxes in (("h_a", fmap_a, boxes_a), ("h_b", fmap_b, boxes_b)):
            fn = normalised_map(f[i])
            h[name].append(torch.stack([reference_roi(fn[:, KEY_FRAME], b.tolist())
                                        for b in boxes[i]]))
    return {k: torch.stack(v) for k, v in h.items()}


def test_region_ablation_head_is_an_mlp_of_its_own_view():
    torch.manual_seed(2)
    head = RegionHead(6, use_context=False, num_units=2, width=8)
    fmap_a, fmap_b, boxes_a, boxes_b = head_inputs(6, seed=3)
    with torch.no_grad():
        out = head(fmap_a, fmap_b, boxes_a, boxes_b)
        ref = reference_head_h(fmap_a, fmap_b, boxes_a, boxes_b)
        l1, l2 = head.mlp[0], head.mlp[2]
        for name, h in (("a2b", ref["h_a"]), ("b2a", ref["h_b"])):
            z = torch.stack([torch.stack([linear(l2.weight, l2.bias,
                                                 gelu(linear(l1.weight, l1.bias, v)))
                                          for v in row]) for row in h])
            torch.testing.assert_close(out[f"z_{name}"], z, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out["h_a"], ref["h_a"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out["h_b"], ref["h_b"], rtol=1e-4, atol=1e-5)


# --- which parameters each loss reaches ------------------------------------------------------

def grad_norms(module):
    return {n: (0.0 if p.grad is None else p.grad.abs().sum().item())
            for n, p in module.named_parameters()}


def trunk_params(model):
    return {f"{s}.{n}": v for s in TRUNK for n, v in grad_norms(getattr(model.backbone, s)).items()}


@pytest.mark.parametrize("local_source", ["y", "shared", "res4"])
def test_region_loss_alone_reaches_trunk_and_local_branch_only(local_source):
    torch.manual_seed(0)
    weights = LossWeights(global_weight=0.0, region_weight=1.0)
    model = build_model("r3d_tiny", variant="constcl", local_source=local_source,
                        context_length=3, losses=weights)
    out = model(*make_batch())
    out["loss"].backward()
    assert out["loss_region"].item() > 0
    dead = [n for n, g in trunk_params(model).items() if g == 0]
    assert not dead, dead
    assert not [n for n, g in grad_norms(model.region_head).items() if g == 0]
    assert all(g == 0 for g in grad_norms(model.global_head).values())
    res5 = grad_norms(model.backbone.res5)
    if local_source == "shared":  # the region head reads the global res5
        assert all(g > 0 for g in res5.values())
    else:
        assert all(g == 0 for g in res5.values())
    if local_source == "y":
        assert all(g > 0 for g in grad_norms(model.res5_local).values())


def test_global_loss_alone_reaches_trunk_and_global_branch_only():
    torch.manual_seed(0)
    weights = LossWeights(global_weight=1.0, region_weight=0.0)
    model = build_model("r3d_tiny", variant="constcl", local_source="y", context_length=3,
                        losses=weights)
    out = model(*make_batch())
    out["loss"].backward()
    dead = [n for n, g in trunk_params(model).items() if g == 0]
    assert not dead, dead
    assert all(g > 0 for g in grad_norms(model.backbone.res5).values())
    assert all(g > 0 for g in grad_norms(model.global_head).values())
    assert all(g == 0 for g in grad_norms(model.res5_local).values())
    assert all(g == 0 for g in grad_norms(model.region_head).values())


def test_cvrl_variant_reaches_every_parameter_through_the_global_loss():
    torch.manual_seed(0)
    model = build_model("r3d_tiny", variant="cvrl", losses=WEIGHTS)
    assert model.res5_local is None and model.region_head is None
    out = model(*make_batch(size=32, t=4))
    out["loss"].backward()
    assert not [n for n, g in grad_norms(model).items() if g == 0]
