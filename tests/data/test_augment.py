import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from constcl.data.augment import (
    CropParams,
    PhotometricAugment,
    apply_crop,
    from_model_range,
    random_crop_flip,
    sample_crop,
    to_model_range,
    transform_boxes,
)


def test_crop_params_in_spec_ranges():
    rng = np.random.default_rng(0)
    for _ in range(300):
        p = sample_crop(90, 160, rng)
        assert 0 <= p.top and p.top + p.height <= 90 and 0 <= p.left and p.left + p.width <= 160
        assert 0.3 - 0.03 <= p.height * p.width / (90 * 160) <= 1.0
        assert 0.5 - 0.05 <= p.width / p.height <= 2.0 + 0.1


def test_crop_fallback_is_centre_crop_with_clamped_aspect():
    # a 2 x 100 frame cannot hold an aspect <= 2 crop of >= 30 % area: centre crop 2 x 4
    p = sample_crop(2, 100, np.random.default_rng(0))
    assert (p.top, p.left, p.height, p.width) == (0, 48, 2, 4)


def test_apply_crop_matches_numpy_slicing_and_flip():
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    p = CropParams(top=5, left=10, height=20, width=20, flip=False, frame_height=40, frame_width=50)
    out = apply_crop(frames, p, size=20)  # no resize
    assert out.shape == (3, 3, 20, 20) and out.dtype == torch.uint8
    np.testing.assert_array_equal(out.permute(1, 2, 3, 0).numpy(), frames[:, 5:25, 10:30])
    flipped = apply_crop(frames, CropParams(5, 10, 20, 20, True, 40, 50), size=20)
    np.testing.assert_array_equal(flipped.permute(1, 2, 3, 0).numpy(), frames[:, 5:25, 29:9:-1])


def test_geometric_part_is_identical_for_all_frames():
    frame = np.random.default_rng(1).integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
    clip, _ = random_crop_flip(np.repeat(frame, 8, axis=0), 32, np.random.default_rng(2))
    assert clip.shape == (3, 8, 32, 32)
    assert torch.equal(clip, clip[:, :1].expand_as(clip))


def test_transform_boxes_hand_computed_crop_and_flip():
    # frame 200 wide x 100 high; crop x 40..140, y 20..70, then flipped
    p = CropParams(
        top=20, left=40, height=50, width=100, flip=True, frame_height=100, frame_width=200
    )
    boxes = np.array(
        [
            [
                0.3,
                0.3,
                0.5,
                0.6,
            ],  # pixels x 60..100, y 30..60 -> crop x .2-.6, y .2-.8 -> flip x .4-.8
            [0.6, 0.2, 0.9, 0.5],  # x 120..180 (crop .8-1.4), y 20..50 (crop 0-.6): 1/3 visible
            [0.0, 0.0, 0.1, 0.1],  # entirely outside
        ]
    )
    out, valid = transform_boxes(boxes, p)
    np.testing.assert_allclose(out[0], [0.4, 0.2, 0.8, 0.8], atol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, 0.0, 0.2, 0.6], atol=1e-6)
    assert valid.tolist() == [True, True, False]
    _, valid_strict = transform_boxes(boxes, p, min_visible=0.5)
    assert valid_strict.tolist() == [True, False, False]


def _params(batch, **overrides):
    params = {
        "jitter": torch.zeros(batch, dtype=torch.bool),
        "factors": torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(batch, 1),
        "order": torch.arange(4).repeat(batch, 1),
        "grayscale": torch.zeros(batch, dtype=torch.bool),
        "sigma": torch.zeros(batch),
        "solarize": torch.zeros(batch, dtype=torch.bool),
    }
    params.update(overrides)
    return params


def test_each_jitter_op_matches_torchvision_per_clip():
    x = torch.rand(3, 3, 1, 20, 24, generator=torch.Generator().manual_seed(0))
    factors = torch.tensor([[1.5, 0.6, 1.3, 0.15], [0.4, 1.7, 0.2, -0.2], [1.0, 1.2, 1.8, 0.05]])
    refs = {
        0: TF.adjust_brightness,
        1: TF.adjust_contrast,
        2: TF.adjust_saturation,
        3: TF.adjust_hue,
    }
    aug = PhotometricAugment()
    for op, ref_fn in refs.items():
        f = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(3, 1)
        f[:, op] = factors[:, op]
        out = aug.apply(x, _params(3, jitter=torch.ones(3, dtype=torch.bool), factors=f))
        ref = torch.stack([ref_fn(x[i, :, 0], float(factors[i, op])) for i in range(3)])
        torch.testing.assert_close(out[:, :, 0], ref, atol=1e-5, rtol=0)


def test_jitter_order_is_per_clip():
    x = torch.rand(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    f = torch.tensor([[0.5, 1.0, 1.0, 0.1]]).repeat(2, 1)
    order = torch.tensor([[0, 3, 1, 2], [3, 0, 1, 2]])  # brightness then hue / hue then brightness
    out = PhotometricAugment().apply(
        x, _params(2, jitter=torch.ones(2, dtype=torch.bool), factors=f, order=order)
    )
    first = TF.adjust_hue(TF.adjust_brightness(x[0, :, 0], 0.5), 0.1)
    second = TF.adjust_brightness(TF.adjust_hue(x[1, :, 0], 0.1), 0.5)
    torch.testing.assert_close(out[0, :, 0], first, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, :, 0], second, atol=1e-5, rtol=0)


def test_blur_grayscale_solarize_match_references():
    x = torch.rand(2, 3, 1, 20, 20, generator=torch.Generator().manual_seed(2))
    aug = PhotometricAugment()
    out = aug.apply(x, _params(2, sigma=torch.tensor([0.7, 0.0])))
    torch.testing.assert_close(
        out[0, :, 0], TF.gaussian_blur(x[0, :, 0], aug.kernel_size, 0.7), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(out[1], x[1])
    gray = aug.apply(x, _params(2, grayscale=torch.tensor([True, False])))
    torch.testing.assert_close(gray[0, :, 0], TF.rgb_to_grayscale(x[0, :, 0], 3), atol=1e-6, rtol=0)
    sol = aug.apply(
        torch.tensor([0.25, 0.5, 0.75]).view(1, 3, 1, 1, 1),
        _params(1, solarize=torch.tensor([True])),
    )
    assert sol.flatten().tolist() == [0.25, 0.5, 0.25]


def test_parameter_probabilities_per_view():
    g = torch.Generator().manual_seed(3)
    n = 4000
    a = PhotometricAugment.for_view("a").sample_params(n, g)
    b = PhotometricAugment.for_view("b").sample_params(n, g)
    assert bool((a["sigma"] > 0).all()) and not bool(a["solarize"].any())
    assert abs(float((b["sigma"] > 0).float().mean()) - 0.1) < 0.03
    assert abs(float(b["solarize"].float().mean()) - 0.2) < 0.03
    for p in (a, b):
        assert abs(float(p["jitter"].float().mean()) - 0.8) < 0.03
        assert abs(float(p["grayscale"].float().mean()) - 0.2) < 0.03
        assert torch.equal(p["order"].sort(dim=1).values, torch.arange(4).expand(n, 4))
        assert len({tuple(r) for r in p["order"].tolist()}) == 24
        sig = p["sigma"][p["sigma"] > 0]
        assert 0.1 <= float(sig.min()) and float(sig.max()) <= 2.0


@pytest.mark.parametrize("view", ["a", "b"])
def test_photometric_is_identical_for_every_frame_and_in_range(view):
    frame = torch.randint(0, 256, (16, 3, 1, 24, 24), dtype=torch.uint8)
    x = frame.expand(16, 3, 6, 24, 24).contiguous()
    aug = PhotometricAugment.for_view(view)
    out = aug(x, torch.Generator().manual_seed(4))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    torch.testing.assert_close(out, out[:, :, :1].expand_as(out), atol=1e-6, rtol=0)
    again = aug(x.float() / 255, torch.Generator().manual_seed(4))
    torch.testing.assert_close(out, again)


def test_model_range_maps_pixels_to_minus_one_one_and_back():
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 256, 1)
    x = to_model_range(u)
    assert x.dtype == torch.float32 and x.shape == u.shape
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.equal(x, u.float() / 127.5 - 1.0)  # what evaluation has always used
    assert torch.equal(to_model_range(u.double()), x)  # [0, 255] floats: the same
    unit = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(to_model_range(unit, max_value=1.0), unit * 2.0 - 1.0)  # training's
    torch.testing.assert_close(from_model_range(x), u.float() / 255, atol=1e-6, rtol=0)
    assert float(from_model_range(torch.tensor([-3.0, 3.0])).min()) == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_photometric_same_on_gpu_as_on_cpu():
    x = torch.randint(0, 256, (6, 3, 4, 32, 32), dtype=torch.uint8)
    for view in "ab":
        aug = PhotometricAugment.for_view(view)
        cpu = aug(x, torch.Generator().manual_seed(5))
        gpu = aug(x.cuda(), torch.Generator().manual_seed(5))
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
