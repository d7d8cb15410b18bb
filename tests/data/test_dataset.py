import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from constcl.data.augment import PhotometricAugment
from constcl.data.dataset import TooManyBadVideos, TwoViewDataset, collate, identity_collate
from constcl.data.sources import VideoItem

from .video_fixtures import LEVEL_FRAMES, index_of

SMALL = dict(clip_frames=8, frame_stride=2, size=32, num_regions=4)


def test_sample_contract(videos):
    ds = TwoViewDataset([VideoItem(videos["levels"], 3, "x")], **SMALL)
    s = ds[0]
    for v in "ab":
        assert s[f"view_{v}"].shape == (3, 8, 32, 32) and s[f"view_{v}"].dtype == torch.uint8
        assert s[f"boxes_{v}"].shape == (4, 4) and s[f"boxes_{v}"].dtype == torch.float32
        assert s[f"mask_{v}"].shape == (4,) and s[f"mask_{v}"].dtype == torch.bool
    assert (s["index"], s["label"], s["num_skipped"]) == (0, 3, 0)
    assert TwoViewDataset([VideoItem(videos["levels"])], **SMALL)[0]["label"] == -1


def test_views_hold_clips_at_the_stride(videos):
    ds = TwoViewDataset([VideoItem(videos["levels"])], **SMALL, seed=5)
    for i in range(3):
        ds.set_epoch(i)
        s = ds[0]
        for v in "ab":
            frames = s[f"view_{v}"].permute(1, 2, 3, 0).numpy()
            idx = index_of(frames)
            assert np.all(np.diff(idx) == 2) and idx.min() >= 0 and idx.max() < LEVEL_FRAMES


def test_short_video_loops(videos):
    s = TwoViewDataset([VideoItem(videos["short"])], **SMALL)[0]  # 10 frames < span 15
    idx = index_of(s["view_a"].permute(1, 2, 3, 0).numpy())
    assert idx.max() < 10 and np.all((np.diff(idx) - 2) % 10 == 0)


def test_identical_frames_stay_identical_within_a_view(videos):
    ds = TwoViewDataset([VideoItem(videos["still"])] * 4, **SMALL)
    batch = collate([ds[i] for i in range(4)])
    g = torch.Generator().manual_seed(0)
    for v in "ab":
        clip = batch[f"view_{v}"]
        assert torch.equal(clip, clip[:, :, :1].expand_as(clip))
        out = PhotometricAugment.for_view(v)(clip, g)
        torch.testing.assert_close(out, out[:, :, :1].expand_as(out), atol=1e-6, rtol=0)
    assert not torch.equal(batch["view_a"], batch["view_b"])  # crops differ between views


def test_reproducible_for_any_number_of_workers(videos):
    items = [VideoItem(videos["levels"]), VideoItem(videos["still"])] * 2
    ds = TwoViewDataset(items, **SMALL, seed=7)
    ds.set_epoch(3)
    inline = collate([ds[i] for i in range(4)])
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    (parallel,) = list(loader)
    for key in inline:
        assert torch.equal(inline[key], parallel[key]), key
    ds.set_epoch(4)
    assert not torch.equal(collate([ds[i] for i in range(4)])["view_a"], inline["view_a"])


def test_detection_regions_from_box_file(videos, tmp_path):
    boxes = tmp_path / "levels.csv"
    boxes.write_text("frame_index,x1,y1,x2,y2,score\n0,0,0,1,1,0.9\n30,0,0,1,1,0.9\n")
    item = VideoItem(videos["levels"], boxes_path=boxes)
    s = TwoViewDataset([item], **SMALL, region_generator="detections")[0]
    for v in "ab":  # a whole-frame box covers every crop: (0, 0, 1, 1), then 3 padded rows
        assert s[f"mask_{v}"].tolist() == [True, False, False, False]
        assert s[f"boxes_{v}"][0].tolist() == [0.0, 0.0, 1.0, 1.0]
        assert not s[f"boxes_{v}"][1:].any()


def test_regions_come_from_each_view_s_key_frame(videos, tmp_path, monkeypatch):
    """docs/spec.md section 1: boxes are taken on the key frame (the middle input frame,
    T // 2). The frame index handed to the box generator must be the source frame that the
    view shows at T // 2, read back from the pixels of the decoded view."""
    import constcl.data.dataset as dataset_module

    seen = []
    original = dataset_module.detection_regions

    def spy(boxes, key_index, params, num):
        seen.append(key_index)
        return original(boxes, key_index, params, num)

    monkeypatch.setattr(dataset_module, "detection_regions", spy)
    box_file = tmp_path / "levels.csv"
    box_file.write_text("frame_index,x1,y1,x2,y2,score\n0,0,0,1,1,0.9\n")
    ds = TwoViewDataset([VideoItem(videos["levels"], boxes_path=box_file)], **SMALL, seed=2,
                        region_generator="detections")
    for epoch in range(3):
        ds.set_epoch(epoch)
        seen.clear()
        s = ds[0]
        shown = [int(index_of(s[f"view_{v}"].permute(1, 2, 3, 0).numpy())[8 // 2]) for v in "ab"]
        assert seen == shown, (seen, shown)


def test_bad_files_are_skipped_counted_and_logged_once(videos, caplog):
    bad = ["corrupt", "truncated", "truncated_mkv", "audio"]
    items = [VideoItem(videos["levels"])] * 4 + [VideoItem(videos[n]) for n in bad]
    ds = TwoViewDataset(items, **SMALL, max_bad_fraction=0.5)
    with caplog.at_level(logging.WARNING, logger="constcl.data.dataset"):
        for _ in range(2):
            for i in range(len(items)):
                s = ds[i]
                assert s["index"] < 4 and s["view_a"].shape == (3, 8, 32, 32)
                if i >= 4:
                    assert s["num_skipped"] >= 1
    assert ds.num_bad() == 4
    assert {p for p, _ in ds.bad_files()} == {str(videos[n]) for n in bad}
    logged = [r.getMessage() for r in caplog.records if "skipping bad video" in r.getMessage()]
    assert len(logged) == 4


def test_too_many_bad_files_stop_with_examples(videos):
    items = [VideoItem(videos["levels"]), VideoItem(videos["corrupt"]), VideoItem(videos["audio"])]
    ds = TwoViewDataset(items, **SMALL, max_bad_fraction=0.4)  # one bad file of three is fine
    with pytest.raises(TooManyBadVideos) as err:
        for i in range(3):
            ds[i]
    message = str(err.value)
    assert "2 bad videos found among the 3 so far" in message  # not "are bad": more may be
    assert "max_bad_fraction=0.4 allows (1)" in message
    assert str(videos["corrupt"]) in message and str(videos["audio"]) in message


def test_identity_collate_returns_the_batch_itself():
    batch = {"clips": torch.zeros(2, 3)}
    assert identity_collate(batch) is batch
