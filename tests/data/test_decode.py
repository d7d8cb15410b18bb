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


def test_join_clips_merges_overlapping_and_nearby_clips_in_time_order():
    from constcl.data.decode.pyav import join_clips

    far = [np.array([20, 22, 24]), np.array([3, 5, 7])]
    assert [p.tolist() for p in join_clips(far, 0)] == [[3, 5, 7], [20, 22, 24]]
    # 12 frames (8..19) lie between 7 and 20: joined when up to 12 may be decoded through
    assert [p.tolist() for p in join_clips(far, 11)] == [[3, 5, 7], [20, 22, 24]]
    assert [p.tolist() for p in join_clips(far, 12)] == [[3, 5, 7, 20, 22, 24]]
    overlap = [np.array([6, 8, 10]), np.array([4, 6, 8]), np.array([40, 2])]  # looped: 40, 2
    assert [p.tolist() for p in join_clips(overlap, 0)] == [[2, 4, 6, 8, 10, 40]]


def _nal(header: int, payload: bytes = b"\x88\x84", length_size: int = 4) -> bytes:
    return (len(payload) + 1).to_bytes(length_size, "big") + bytes([header]) + payload


def test_nonref_h264_access_units_are_recognised_from_their_nal_headers():
    from constcl.data.decode.pyav import is_nonref_h264

    assert is_nonref_h264(_nal(0x01), 4)  # nal_ref_idc 0, non-IDR slice
    assert is_nonref_h264(_nal(0x06) + _nal(0x01) + _nal(0x01), 4)  # SEI, then two slices
    assert is_nonref_h264(_nal(0x01, length_size=2), 2)
    assert not is_nonref_h264(_nal(0x41), 4)  # nal_ref_idc 2: other frames refer to it
    assert not is_nonref_h264(_nal(0x01) + _nal(0x21), 4)  # one reference slice is enough
    assert not is_nonref_h264(_nal(0x65), 4)  # IDR
    assert not is_nonref_h264(_nal(0x06), 4)  # no slice at all
    assert not is_nonref_h264(_nal(0x01)[:-1], 4)  # the length runs past the packet
    assert not is_nonref_h264(b"", 4)


def _count_skips(monkeypatch):
    from constcl.data.decode import pyav as decode

    counts = {"skipped": 0, "full_passes": 0}
    real_nonref, real_forward = decode.is_nonref_h264, decode._decode_forward

    def nonref(data, length_size):
        result = real_nonref(data, length_size)
        counts["skipped"] += result  # only called for frames not needed, so True means skipped
        return result

    def forward(*args, skip=None, **kwargs):
        counts["full_passes"] += skip is None
        return real_forward(*args, skip=skip, **kwargs)

    monkeypatch.setattr(decode, "is_nonref_h264", nonref)
    monkeypatch.setattr(decode, "_decode_forward", forward)
    return counts


@pytest.mark.parametrize("name", ["levels", "levels_wide", "vfr"])
def test_skipping_nonref_frames_changes_no_decoded_frame(videos, name, monkeypatch):
    from constcl.data.decode import pyav as decode

    clips = [[20, 22, 24], [3, 5, 7], [30, 31, 40], [1, 9, 17, 25, 33, 41]]
    if name == "vfr":
        clips = [[9, 10, 12], [0, 2, 4], [3, 3, 5], [12]]
    with monkeypatch.context() as m:  # the reference: every frame decoded
        m.setattr(decode, "_nonref_length_size", lambda stream: None)
        reference = [decode_frames(videos[name], c) for c in clips]
    counts = _count_skips(monkeypatch)
    for clip, expected in zip(clips, reference, strict=True):
        assert np.array_equal(decode_frames(videos[name], clip), expected)
    together = decode_clips(videos[name], clips)
    assert all(np.array_equal(a, b) for a, b in zip(together, reference, strict=True))
    assert counts["skipped"] > 0 and counts["full_passes"] == 0
    if name != "vfr":
        assert [index_of(f).tolist() for f in together] == clips


@pytest.mark.parametrize("name", ["levels", "vfr"])
def test_a_skipped_frame_that_is_needed_is_decoded_after_all(videos, name, monkeypatch):
    """With a window that keeps nothing, wanted non-reference frames are skipped too: the
    check must notice and decode that range again without skipping."""
    from constcl.data.decode import pyav as decode

    clips = [[3, 4, 5, 6], [0, 1], [11, 12, 13, 14]] if name == "levels" else [[3, 4, 5], [0]]
    reference = [decode_frames(videos[name], c) for c in clips]
    counts = _count_skips(monkeypatch)
    monkeypatch.setattr(decode, "_KEEP_WINDOW_FRAMES", -2.0)
    for clip, expected in zip(clips, reference, strict=True):
        assert np.array_equal(decode_frames(videos[name], clip), expected)
    assert counts["full_passes"] > 0
