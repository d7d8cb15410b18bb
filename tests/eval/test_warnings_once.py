"""Issue 23, case 7: a bad video is reported once, not once per epoch or per key frame."""

from __future__ import annotations

import logging

import numpy as np
import torch

from constcl.eval.classify.finetune import RandomClipVideos
from constcl.eval.detect.task import KeyFrameClips, encode_key_frames
from constcl.eval.views import ViewSpec


def test_finetune_logs_a_bad_training_video_once_over_epochs(tmp_path, caplog):
    """Fine-tuning decodes every video again each epoch (in fresh DataLoader workers); the
    warning came once per epoch."""
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(3000))
    data = RandomClipVideos([str(bad)], [0], ViewSpec(4, 2, 1, 1, 32), seed=0,
                            bad_dir=tmp_path / "bad")
    (tmp_path / "bad").mkdir()
    with caplog.at_level(logging.WARNING):
        for epoch in range(3):
            data.epoch = epoch
            assert data[0] is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(bad) in warnings[0], warnings


class _NoNet(torch.nn.Module):
    out_channels = 4

    def forward_features(self, x):  # every key frame fails, so the network is never called
        raise AssertionError("no clip should reach the network")


def test_detect_logs_a_missing_video_once_not_per_key_frame(tmp_path, caplog):
    keys = [("vid_a", 902), ("vid_a", 903), ("vid_a", 904), ("vid_b", 902)]
    data = KeyFrameClips(keys, {}, frames=4, stride=2, size=32, fps=None, time_offset=0.0)
    boxes = [np.array([[0.1, 0.1, 0.5, 0.5]], np.float32)] * 4
    with caplog.at_level(logging.WARNING):
        out = encode_key_frames(_NoNet(), data, boxes, torch.device("cpu"), 2, 0, "test")
    assert not out["valid"].any()
    warnings = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert warnings == ["skipping 1 key frame(s) of video vid_b: no video for vid_b",
                        "skipping 3 key frame(s) of video vid_a: no video for vid_a"]
