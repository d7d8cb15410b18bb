import pytest
import torch

from constcl.models import LOCAL_SOURCES, VARIANTS, build_model


def batch(b=2, t=16, size=32, k=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    views = [torch.rand(b, 3, t, size, size, generator=gen) * 2 - 1 for _ in range(2)]
    xy = torch.rand(2, b, k, 2, generator=gen) * 0.5
    wh = 0.2 + torch.rand(2, b, k, 2, generator=gen) * 0.3
    boxes = torch.cat([xy, xy + wh], dim=-1)
    masks = torch.rand(2, b, k, generator=gen) < 0.8
    masks[:, :, 0] = True
    return views[0], views[1], boxes[0], boxes[1], masks[0], masks[1]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("local_source", LOCAL_SOURCES)
def test_every_parameter_gets_a_gradient(variant, local_source):
    torch.manual_seed(0)
    supervised = variant == "supervised"
    model = build_model("r3d_tiny", variant=variant, local_source=local_source, context_length=3,
                        **({"num_classes": 3} if supervised else {}))
    labels = {"labels": torch.tensor([0, 2])} if supervised else {}
    out = model(*batch(size=64), **labels)  # res5 2 x 2: the positional code gets a gradient
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert torch.isfinite(out["loss"])
    expected = {"loss", "loss_global", "global_accuracy", "global_entropy"}
    if variant in ("region", "constcl"):
        expected |= {"loss_region", "region_pos_sim_mean", "region_neg_sim_mean",
                     "region_match_accuracy", "region_contrast_accuracy"}
    if variant == "constcl":
        expected.add("attn_entropy")
    if supervised:
        expected = {"loss", "loss_supervised", "train_accuracy"}
    assert expected <= set(out)


def test_supervised_loss_by_hand():
    """Cross-entropy of a linear classifier on the pooled res5 of both views, written out:
    logits = W mean_{t,y,x}(res5) + b, loss = mean over the 2B clips of -log softmax[label]."""
    torch.manual_seed(0)
    model = build_model("r3d_tiny", variant="supervised", num_classes=4).eval()
    view_a, view_b, *_ = batch(b=3, size=32)
    labels = torch.tensor([3, 0, 1])
    out = model(view_a, view_b, labels=labels)
    with torch.no_grad():
        res5 = model.backbone.res5(model.backbone.forward_trunk(
            torch.cat([view_a, view_b]))["res4"])
        pooled = res5.mean(dim=(2, 3, 4))
        linear = model.global_head.mlp[0]
        logits = pooled @ linear.weight.T + linear.bias
        target = torch.cat([labels, labels])
        expected, hits = 0.0, 0
        for row, y in zip(logits, target, strict=True):
            expected += (torch.log(torch.exp(row).sum()) - row[y]).item() / len(target)
            hits += int(row.argmax() == y)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["train_accuracy"].item() == pytest.approx(hits / 6)
    with pytest.raises(ValueError, match="needs labels"):
        model(view_a, view_b)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("r3d_tiny", variant="supervised")


def test_global_head_average_pools_res5():
    """The 5-D path pools by the mean over (T, H, W): the same as feeding the mean by hand."""
    torch.manual_seed(0)
    model = build_model("r3d_tiny", context_length=3).eval()
    fmap = torch.randn(3, model.backbone.out_channels, 2, 3, 4)
    torch.testing.assert_close(model.global_head(fmap), model.global_head(fmap.mean((2, 3, 4))))


def test_y_shape_has_two_independent_res5_copies():
    torch.manual_seed(0)
    model = build_model("r3d_tiny", variant="constcl", local_source="y")
    w_global = model.backbone.res5[0].conv1.weight
    w_local = model.res5_local[0].conv1.weight
    assert w_global.shape == w_local.shape and not torch.equal(w_global, w_local)
    x = torch.rand(1, 3, 16, 32, 32)
    model.eval()
    with torch.no_grad():
        res4 = model.backbone.forward_trunk(x)["res4"]
        global_map, local_map = model.backbone.res5(res4), model.res5_local(res4)
        assert global_map.shape == local_map.shape
        assert not torch.allclose(global_map, local_map)


def test_bad_variant_names_allowed_values():
    with pytest.raises(ValueError, match="cvrl"):
        build_model("r3d_tiny", variant="simclr")
    with pytest.raises(ValueError, match="shared"):
        build_model("r3d_tiny", local_source="res3")


def test_region_variants_need_boxes():
    model = build_model("r3d_tiny", context_length=3)
    a, b, *_ = batch()
    with pytest.raises(ValueError, match="boxes"):
        model(a, b)


def test_tiny_model_overfits_one_batch():
    """With the library's optimiser (region-only parameters at lr / region_weight), both losses
    fall on one repeated batch."""
    from constcl.engine.optim import auto_local_lr_scale, build_optimizer

    torch.manual_seed(0)
    model = build_model("r3d_tiny", variant="constcl", context_length=3)
    data = batch(b=4, t=8, size=96, seed=1)  # res5 map 3 x 3: boxes see different cells
    opt = build_optimizer(model, "sgd", 0.05, 0.9, 0.0, local_lr_scale=auto_local_lr_scale(1e-3))
    losses, region = [], []
    for _ in range(60):
        out = model(*data)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss_global"].item())
        region.append(out["loss_region"].item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    first, last = sum(region[:5]) / 5, sum(region[-5:]) / 5
    assert last < 0.9 * first, ("region loss", first, last)
