import numpy as np
import pytest

from constcl.data.decode import (
    VideoError,
    decode_all,
    decode_clips,
    decode_frames,
    probe,
    verify,
)

from .video_fixtures import LEVEL_FRAMES, index_of


def test_probe_reads_the_header(videos):
    info = probe(videos["levels"])
    assert (info.num_frames, info.fps, info.width, info.height) == (LEVEL_FRAMES, 25.0, 64, 64)
    assert info.duration == pytest.approx(LEVEL_FRAMES / 25)


def test_decode_selects_the_requested_frames_in_request_order(videos):
    wanted = [9, 0, 17, 47, 3, 3, 30]  # unsorted, repeated, first one after a seek
    frames = decode_frames(videos["levels"], wanted)
    assert frames.shape == (7, 64, 64, 3) and frames.dtype == np.uint8
    assert index_of(frames).tolist() == wanted


@pytest.mark.parametrize("start", [1, 8, 13, 40])
def test_decode_after_seeking_to_a_key_frame(videos, start):
    wanted = list(range(start, min(start + 8, LEVEL_FRAMES)))
    assert index_of(decode_frames(videos["levels"], wanted)).tolist() == wanted


def test_variable_frame_rate_picks_latest_frame_at_or_before_each_time(videos):
    # frames shown at 0, 40, 80, 200, 240, 400, 440, 480 ms; index i means i * 40 ms (25 fps)
    info = probe(videos["vfr"])
    assert info.fps == 25.0
    frames = decode_frames(videos["vfr"], list(range(13)))
    assert index_of(frames).tolist() == [0, 1, 2, 2, 2, 3, 4, 4, 4, 4, 5, 6, 7]


def test_short_side_resize_keeps_aspect(videos):
    frames = decode_frames(videos["levels_wide"], [0, 5], short_side=32)
    assert frames.shape == (2, 32, 48, 3)
    assert index_of(frames).tolist() == [0, 5]


def test_decode_all_returns_every_frame(videos):
    frames = decode_all(videos["levels"])
    assert index_of(frames).tolist() == list(range(LEVEL_FRAMES))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("corrupt", "unreadable"),
        ("truncated", "unreadable"),  # mp4 cut in half loses its index (moov atom)
        ("truncated_mkv", "truncated"),  # mkv cut in half opens but ends early
        ("audio", "no video stream"),
    ],
)
def test_bad_files_raise_video_error_with_reason(videos, name, reason):
    with pytest.raises(VideoError) as err:
        verify(videos[name])
    assert reason in err.value.reason and err.value.path == str(videos[name])


def test_indices_far_past_the_end_raise(videos):
    with pytest.raises(VideoError, match="truncated"):
        decode_frames(videos["levels"], [LEVEL_FRAMES + 10])


@pytest.mark.parametrize("name", ["levels", "vfr"])
def test_decode_clips_from_one_open_equals_each_clip_alone(videos, name):
    # the second clip starts before the first one ends, one starts at 0 after a later one
    # (the container must seek back), and one repeats a frame
    clips = [[20, 22, 24], [3, 5, 7], [0, 1, 1], [6, 30, 12]]
    if name == "vfr":
        clips = [[9, 10, 12], [0, 2, 4], [3, 3, 5]]
    together = decode_clips(videos[name], clips)
    assert len(together) == len(clips)
    for clip, frames in zip(clips, together, strict=True):
        alone = decode_frames(videos[name], clip)
        assert frames.shape == alone.shape and np.array_equal(frames, alone)
    if name == "levels":  # and they are the requested frames
        assert [index_of(f).tolist() for f in together] == clips


def test_decode_clips_reports_a_truncated_file(videos):
    with pytest.raises(VideoError):
        decode_clips(videos["truncated_mkv"], [[0, 1], [LEVEL_FRAMES - 2, LEVEL_FRAMES - 1]])
