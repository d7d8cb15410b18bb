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
    model = build_model("r3d_tiny", variant=variant, local_source=local_source, context_length=3)
    out = model(*batch(size=64))  # res5 is 2 x 2: the spatial positional code gets a gradient
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert torch.isfinite(out["loss"])
    expected = {"loss", "loss_global", "global_accuracy", "global_entropy"}
    if variant != "cvrl":
        expected |= {"loss_region", "region_pos_sim_mean", "region_neg_sim_mean"}
    assert expected <= set(out)


def test_total_loss_is_the_weighted_sum():
    torch.manual_seed(0)
    model = build_model("r3d_tiny", context_length=3)
    out = model(*batch())
    expected = out["loss_global"] + 1e-3 * out["loss_region"]
    torch.testing.assert_close(out["loss"], expected)


def test_y_shape_has_two_independent_res5_copies():
    torch.manual_seed(0)
    model = build_model("r3d_tiny", variant="constcl", local_source="y")
    w_global = model.backbone.res5[0].conv1.weight
    w_local = model.res5_local[0].conv1.weight
    assert w_global.shape == w_local.shape and not torch.equal(w_global, w_local)
    x = torch.rand(1, 3, 16, 32, 32)
    model.eval()
    with torch.no_grad():
        assert model.encode(x, "global").shape == model.encode(x, "local").shape
        assert not torch.allclose(model.encode(x, "global"), model.encode(x, "local"))


def test_encode_errors_are_clear():
    model = build_model("r3d_tiny", variant="cvrl")
    with pytest.raises(ValueError, match="no local branch"):
        model.encode(torch.zeros(1, 3, 16, 32, 32), "local")
    with pytest.raises(ValueError, match="branch"):
        model.encode(torch.zeros(1, 3, 16, 32, 32), "middle")


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
    torch.manual_seed(0)
    model = build_model("r3d_tiny", variant="constcl", context_length=3)
    data = batch(b=4, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(100):
        out = model(*data)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
