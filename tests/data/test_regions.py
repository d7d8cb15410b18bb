import numpy as np
import pytest
from skimage import data

from constcl.data.augment import CropParams
from constcl.data.regions import cue_proposals, cue_regions, detection_regions, random_regions


def test_random_boxes_valid_and_in_spec_ranges():
    boxes, mask = random_regions(10_000, np.random.default_rng(0))
    assert boxes.shape == (10_000, 4) and boxes.dtype == np.float32 and mask.all()
    x1, y1, x2, y2 = boxes.T
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x1 < 1).all() and (y1 < 1).all()
    assert (x2 <= 0.999 + 1e-6).all() and (y2 <= 0.999 + 1e-6).all()
    w, h = x2 - x1, y2 - y1
    inside = (x2 < 0.998) & (y2 < 0.998)  # not clipped at 0.999
    assert (w[inside] >= 0.1 - 1e-6).all() and (w[inside] <= 0.5 + 1e-6).all()
    ratio = h[inside] / w[inside]
    assert ratio.min() >= 0.5 - 1e-5 and ratio.max() <= 2.0 + 1e-5
    # independent draws: the reference code's bug puts x1 == y1 (boxes on the diagonal)
    assert abs(np.corrcoef(x1, y1)[0, 1]) < 0.05
    assert abs(x1.mean() - 0.5) < 0.02 and abs(y1.mean() - 0.5) < 0.02


def test_detection_box_mapped_through_crop_and_flip_and_padded():
    # frame 200 x 100 (w x h); crop x 40..140, y 20..70, flipped
    p = CropParams(
        top=20, left=40, height=50, width=100, flip=True, frame_height=100, frame_width=200
    )
    boxes_by_frame = {
        0: np.array([[0.0, 0.0, 1.0, 1.0, 0.9]], np.float32),
        10: np.array(
            [
                [0.0, 0.0, 0.1, 0.1, 0.99],  # outside the crop: dropped
                [0.3, 0.3, 0.5, 0.6, 0.5],  # -> (0.4, 0.2, 0.8, 0.8), hand computed
                [0.2, 0.2, 0.7, 0.7, 0.8],  # x 40..140 y 20..70 = the crop itself -> (0, 0, 1, 1)
            ],
            np.float32,
        ),
    }
    boxes, mask = detection_regions(boxes_by_frame, key_frame=8, params=p, num=4)  # nearest: 10
    assert mask.tolist() == [True, True, False, False]
    np.testing.assert_allclose(boxes[0], [0.0, 0.0, 1.0, 1.0], atol=1e-6)  # best score first
    np.testing.assert_allclose(boxes[1], [0.4, 0.2, 0.8, 0.8], atol=1e-6)
    assert not boxes[2:].any()
    empty, empty_mask = detection_regions({}, 0, p, 4)
    assert not empty_mask.any() and empty.shape == (4, 4)


@pytest.mark.parametrize("image", [data.astronaut(), data.chelsea()], ids=["astronaut", "chelsea"])
def test_cues_give_k_distinct_boxes_on_a_natural_image(image):
    h, w = image.shape[:2]
    identity = CropParams(0, 0, h, w, False, h, w)
    boxes, mask = cue_regions(image, identity, 8, np.random.default_rng(0))
    assert boxes.shape == (8, 4) and mask.all()
    assert (boxes >= 0).all() and (boxes <= 1).all()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert (area >= 0.01 - 1e-6).all() and (area <= 0.8 + 1e-6).all()
    assert len({tuple(np.round(b, 3)) for b in boxes}) == 8


def test_cue_proposals_follow_image_structure():
    # a dark frame with one bright square: some proposal must fit the square tightly
    frame = np.full((96, 96, 3), 20, np.uint8)
    frame[24:60, 40:80] = 230
    proposals = cue_proposals(frame, np.random.default_rng(0))
    target = np.array([40 / 96, 24 / 96, 80 / 96, 60 / 96])
    assert np.abs(proposals - target).max(axis=1).min() < 0.03
