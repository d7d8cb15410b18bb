"""The decoder interface: in-memory videos, backend selection, and torchcodec against PyAV
(the torchcodec tests are skipped when it, or FFmpeg's shared libraries, cannot be loaded)."""

import numpy as np
import pytest

from constcl.config import ConfigError, load_config
from constcl.data.decode import (
    DECODERS,
    EncodedVideo,
    VideoError,
    decode_frames,
    get_decoder,
    probe,
)

from .video_fixtures import LEVEL_FRAMES, index_of


def _torchcodec_missing() -> str:
    try:
        import torchcodec.decoders  # noqa: F401  (loads FFmpeg's libraries)
    except (ImportError, OSError, RuntimeError) as err:
        return f"torchcodec is not usable here ({type(err).__name__}); it is an optional extra"
    return ""


needs_torchcodec = pytest.mark.skipif(bool(_torchcodec_missing()), reason=_torchcodec_missing())


def test_in_memory_video_decodes_like_the_file(videos):
    path = videos["levels_wide"]
    indices = np.array([5, 0, 47, 5, 20])
    from_file = decode_frames(path, indices, short_side=32)
    from_bytes = decode_frames(EncodedVideo("x.mkv", path.read_bytes()), indices, short_side=32)
    assert np.array_equal(from_file, from_bytes)
    assert index_of(from_bytes).tolist() == [5, 0, 47, 5, 20]
    assert probe(EncodedVideo("x.mkv", path.read_bytes())).num_frames == LEVEL_FRAMES


def test_unknown_decoder_names_the_choices(videos):
    assert DECODERS == ("pyav", "torchcodec")
    with pytest.raises(ValueError, match="choose one of \\['pyav', 'torchcodec'\\]"):
        decode_frames(videos["levels"], [0], backend="nvdec")
    with pytest.raises(ConfigError, match="data.decoder='nvdec' is not allowed"):
        load_config(None, ["data.decoder=nvdec"])
    assert get_decoder("pyav").device == "cpu"


def test_bad_in_memory_video_raises_video_error(videos):
    with pytest.raises(VideoError, match="broken.mp4: unreadable"):
        probe(EncodedVideo("broken.mp4", videos["corrupt"].read_bytes()))


@needs_torchcodec
@pytest.mark.parametrize("name", ["levels", "levels_wide", "short"])
def test_torchcodec_selects_the_same_frames_as_pyav(videos, name):
    path = videos[name]
    info = probe(path, "torchcodec")
    assert info.num_frames == probe(path).num_frames
    indices = np.r_[np.arange(info.num_frames), info.num_frames]  # one past the end: the last
    expected = list(range(info.num_frames)) + [info.num_frames - 1]
    frames = decode_frames(path, indices, short_side=32, backend="torchcodec")
    assert frames.shape[1:] == decode_frames(path, [0], short_side=32).shape[1:]
    assert index_of(frames).tolist() == expected
    in_memory = decode_frames(EncodedVideo(name, path.read_bytes()), indices[::-1],
                              backend="torchcodec")
    assert index_of(in_memory).tolist() == expected[::-1]


@needs_torchcodec
@pytest.mark.parametrize("name, reason", [("corrupt", "unreadable"), ("audio", "no video stream"),
                                          ("truncated", "unreadable")])
def test_torchcodec_reports_bad_files_as_video_errors(videos, name, reason):
    with pytest.raises(VideoError, match=reason):
        probe(videos[name], "torchcodec")
