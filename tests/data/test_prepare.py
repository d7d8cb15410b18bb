"""`constcl data prepare`: the transcoded copy, bad inputs, the manifest, resuming after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from constcl.cli import main
from constcl.data.decode import decode_frames, probe
from constcl.data.encode import write_video
from constcl.data.prepare import EncodeSettings, PrepareSettings, prepare
from constcl.data.sources import list_videos

from .video_fixtures import _write_audio_only, grey_frames, index_of, level_of

FRAMES = 50  # 2 s at 25 fps


def level_video(path: Path, width: int = 96, height: int = 64, gop: int = 250) -> Path:
    levels = [level_of(i) for i in range(FRAMES)]
    return write_video(path, grey_frames(levels, height, width), fps=25, gop_size=gop)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """cats/ and dogs/ with two good videos each (one key frame per video), and four bad files."""
    root = tmp_path_factory.mktemp("prepare_src")
    for cls in ("cats", "dogs"):
        (root / cls).mkdir()
        for i in range(2):
            level_video(root / cls / f"{cls}{i}.mp4")
    good = (root / "cats" / "cats0.mp4").read_bytes()
    (root / "dogs" / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "dogs" / "empty.mp4").write_bytes(b"")
    (root / "dogs" / "garbage.mkv").write_bytes(np.random.default_rng(0).bytes(3000))
    _write_audio_only(root / "cats" / "audio.mp4")
    return root


@pytest.fixture(scope="module")
def prepared(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare(PrepareSettings(str(source), str(out), encode=EncodeSettings(short_side=32),
                            workers=2, progress=False))
    return out


def test_bad_inputs_are_reported_like_data_check_and_left_out(source, prepared):
    report = json.loads((prepared / "report.json").read_text())
    bad = {Path(b["path"]).name: b["reason"] for b in report["bad"]}
    assert set(bad) == {"truncated.mp4", "empty.mp4", "garbage.mkv", "audio.mp4"}
    assert bad["audio.mp4"].startswith("no video stream")
    assert report["ok"] == 4
    assert {"path", "ok", "reason", "duration", "fps", "width", "height", "num_frames"} <= set(
        report["files"][0])
    items = list_videos(prepared / "manifest.csv")
    assert sorted(i.path.name for i in items) == ["cats0.mp4", "cats1.mp4", "dogs0.mp4",
                                                  "dogs1.mp4"]


def test_manifest_is_a_source_with_the_labels_carried_over(prepared):
    items = list_videos(prepared / "manifest.csv")
    assert {(i.path.stem, i.label, i.label_name) for i in items} == {
        ("cats0", 0, "cats"), ("cats1", 0, "cats"), ("dogs0", 1, "dogs"), ("dogs1", 1, "dogs")}
    assert all(i.path.is_file() and i.path.is_relative_to(prepared) for i in items)


def test_copy_is_resized_keyed_every_second_silent_and_frame_exact(prepared):
    path = prepared / "videos" / "cats" / "cats0.mp4"
    info = probe(path)
    assert (info.width, info.height, info.num_frames, info.fps) == (48, 32, FRAMES, 25.0)
    with av.open(str(path)) as container:
        assert not container.streams.audio
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        keys = [float(p.pts * stream.time_base) for p in container.demux(stream)
                if p.is_keyframe and p.pts is not None]
    assert keys[0] == 0 and np.diff(sorted(keys + [FRAMES / 25])).max() <= 1.0
    frames = decode_frames(path, np.arange(FRAMES))
    assert index_of(frames).tolist() == list(range(FRAMES))


def test_frame_rate_cap_keeps_the_frames_a_player_would_show(source, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "one").mkdir()
    level_video(tmp_path / "one" / "v.mp4")
    prepare(PrepareSettings(str(tmp_path / "one"), str(out),
                            encode=EncodeSettings(short_side=0, max_fps=12.5), progress=False))
    path = out / "videos" / "v.mp4"
    info = probe(path)
    assert info.fps == 12.5 and (info.width, info.height) == (96, 64)
    # output frame i is shown at i / 12.5 s = source frame 2 i
    assert index_of(decode_frames(path, np.arange(FRAMES // 2))).tolist() == list(
        range(0, FRAMES, 2))


def test_rerun_skips_done_videos_and_redoes_incomplete_ones(source, tmp_path):
    out = tmp_path / "out"
    settings = PrepareSettings(str(source), str(out), encode=EncodeSettings(short_side=32),
                               progress=False)
    first = prepare(settings)
    assert (first.written, first.bad) == (8, 4)
    videos = sorted((out / "videos").rglob("*.mp4"))
    stamps = {p: p.stat().st_mtime_ns for p in videos}
    # simulate a kill while cats1 was being written: no record, a left-over partial file
    records = out / ".prepare" / "records"
    victim = next(r for r in records.iterdir() if "cats1" in r.read_text())
    victim.unlink()
    (out / "videos" / "cats" / "cats1.mp4").unlink()
    (out / "videos" / "cats" / "cats1.mp4.999.partial").write_bytes(b"half")
    second = prepare(settings)
    assert (second.written, second.reused) == (1, 7)
    assert not list(out.rglob("*.partial"))
    for path, stamp in stamps.items():
        if path.name != "cats1.mp4":
            assert path.stat().st_mtime_ns == stamp, path
    assert len(list_videos(out / "manifest.csv")) == 4


def test_other_settings_into_the_same_folder_are_refused(prepared, source, caplog):
    code = main(["data", "prepare", str(source), str(prepared), "--short-side", "64",
                 "--no-progress"])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
    assert len(errors) == 1 and "prepared with other settings" in errors[0]


def test_kill_mid_run_then_rerun_finishes_without_redoing(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    tile = np.random.default_rng(0).integers(0, 256, (15, 40, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(tile, 8, axis=0), 8, axis=1)  # (120, 320, 3) blocks
    frames = np.stack([texture[:, t: t + 160] for t in range(150)])
    for i in range(10):
        write_video(src / f"v{i}.mp4", np.roll(frames, i, axis=1), fps=25, gop_size=250)
    cmd = [sys.executable, "-m", "constcl", "data", "prepare", str(src), str(out),
           "--workers", "2", "--short-side", "64", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    records = out / ".prepare" / "records"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(records.glob("*.json"))) < 2:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {r.name for r in records.glob("*.json")}
    assert 2 <= len(done) < 10, "the kill should land mid-run"
    outputs = {json.loads((records / r).read_text())["output"]["path"] for r in done}
    stamps = {p: (out / p).stat().st_mtime_ns for p in outputs}
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(done)} done before" in rerun.stdout
    assert all((out / p).stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    items = list_videos(out / "manifest.csv")
    assert sorted(i.path.name for i in items) == [f"v{i}.mp4" for i in range(10)]
    assert all(probe(i.path).num_frames == 150 for i in items)
    assert not list(out.rglob("*.partial"))
