"""``constcl extract`` against an independent computation.

The reference decodes with PyAV directly (every frame with its presentation time; nominal index
``i`` is the latest frame shown at or before ``i / fps``), crops and normalises by hand
(``x / 127.5 - 1``) and runs the clips through ``load_encoder``. The videos' short side equals
``--size`` so no resampling enters the comparison.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from constcl.cli import main
from constcl.features.encoder import load_encoder
from constcl.features.extract import ExtractSettings, extract

from .conftest import VFR_TIMES_MS

SIZE, FRAMES, FRAME_STRIDE, STRIDE = 64, 4, 2, 0.3
ARGS = ["--checkpoint", "random", "--backbone", "r3d_tiny", "--seed", "3", "--size", str(SIZE),
        "--clip-frames", str(FRAMES), "--frame-stride", str(FRAME_STRIDE), "--stride",
        str(STRIDE), "--batch-size", "3", "--no-progress"]


def reference_frames(path: Path, indices: list[int]) -> np.ndarray:
    """(N, H, W, 3) frames at nominal indices, picked from every decoded frame by its pts."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps, tb = Fraction(stream.average_rate), stream.time_base
        start = stream.start_time or 0
        shown = [(Fraction(f.pts - start) * tb, f.to_ndarray(format="rgb24"))
                 for f in container.decode(stream)]
    out = []
    for i in indices:
        limit = Fraction(i) / fps + tb
        out.append([image for t, image in shown if t <= limit][-1])
    return np.stack(out)


def reference_features(path: Path, frame_indices: list[list[int]]) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """(pooled (S, C), res5 maps (S, C, T', H', W')) of the snippets, computed by hand."""
    clips = []
    for indices in frame_indices:
        frames = reference_frames(path, indices)
        offset = (frames.shape[2] - SIZE) // 2  # landscape: centre square of the width
        crop = frames[:, :SIZE, offset:offset + SIZE]
        clips.append(torch.from_numpy(crop).permute(3, 0, 1, 2).float() / 127.5 - 1.0)
    encoder = load_encoder("random", backbone="r3d_tiny", seed=3)
    with torch.no_grad():
        maps = encoder.features(torch.stack(clips))
        pooled = encoder.embed(torch.stack(clips))
    return pooled.numpy(), maps.numpy()


@pytest.fixture(scope="module")
def extracted(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("extract-out")
    assert main(["extract", str(source), "--out", str(out), "--workers", "2", "--dense",
                 *ARGS]) == 0
    return out


def rows_of(out: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    return {row["rel"]: row for row in rows}


@pytest.mark.parametrize("rel", ["cfr/steady", "vfr/bursts"])
def test_features_equal_an_independent_computation(extracted: Path, source: Path,
                                                   rel: str) -> None:
    row = rows_of(extracted)[rel]
    assert row["files"] == {"global": f"{rel}.npy", "global.res5": f"{rel}.res5.npy"}
    features = np.load(extracted / f"{rel}.npy")
    dense = np.load(extracted / f"{rel}.res5.npy")
    pooled, maps = reference_features(source / f"{rel}.mp4", row["frame_indices"])
    assert features.dtype == np.float32 and features.shape == (row["snippets"], 64)
    np.testing.assert_allclose(features, pooled, rtol=1e-4, atol=1e-5)
    assert dense.dtype == np.float16 and dense.shape == maps.shape
    np.testing.assert_allclose(dense.astype(np.float32), maps, rtol=2e-3, atol=2e-3)


def test_constant_rate_snippets(extracted: Path) -> None:
    row = rows_of(extracted)["cfr/steady"]
    assert row["fps"] == 25 and row["frames"] == 40 and row["class_name"] == "cfr"
    # a snippet every 0.3 s = 7.5 frames, rounded; the last one must fit (start <= 40 - 7)
    starts = [0, 8, 15, 23, 30]
    assert [f[0] for f in row["frame_indices"]] == starts
    assert row["frame_indices"][1] == [8, 10, 12, 14]
    np.testing.assert_allclose(row["start_times"], np.array(starts) / 25)


def test_variable_rate_snippet_times(extracted: Path, source: Path) -> None:
    """Snippet k starts at the nominal frame nearest k * 0.3 s (nominal grid: the file's
    average rate), and what a player shows at its recorded start time is the source frame the
    snippet begins with (identified by content among the encoded frames)."""
    from constcl.data.decode import decode_frames

    from .conftest import block_frames

    row = rows_of(extracted)["vfr/bursts"]
    fps = row["fps"]
    assert fps != 25  # the nominal grid is the average rate, not the encoder's time base
    assert row["snippets"] == int((row["frames"] - 7) / (STRIDE * fps) + 1e-9) + 1 >= 5
    written = block_frames(len(VFR_TIMES_MS), 2).astype(np.float32)
    for k, (start_time, indices) in enumerate(zip(row["start_times"], row["frame_indices"],
                                                  strict=True)):
        assert indices[0] == round(k * STRIDE * fps)
        assert start_time == pytest.approx(indices[0] / fps)
        assert abs(start_time - k * STRIDE) <= 0.5 / fps + 1e-9
        on_screen = max(j for j, t in enumerate(VFR_TIMES_MS) if t <= start_time * 1000 + 1e-6)
        frame = decode_frames(source / "vfr" / "bursts.mp4", [indices[0]])[0]
        nearest = np.argmin(((written - frame) ** 2).mean(axis=(1, 2, 3)))
        assert nearest == on_screen, (k, start_time)


def test_settings_record_and_report(extracted: Path) -> None:
    record = json.loads((extracted / "extract.json").read_text())
    assert record["checkpoint"] == {"random": "r3d_tiny", "seed": 3, "input_norm": "none"}
    assert record["settings"]["stride"] == STRIDE and record["settings"]["dense"] is True
    report = json.loads((extracted / "report.json").read_text())
    assert report["ok"] == 2 and report["bad"] == []


def test_rerun_with_other_settings_is_refused(extracted: Path, source: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    args = [a if a != str(STRIDE) else "0.5" for a in ARGS]
    assert main(["extract", str(source), "--out", str(extracted), "--dense", *args]) == 2
    errors = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
    assert len(errors) == 1 and "stride" in errors[0] and "extract.json" in errors[0]


def test_corrupt_video_is_skipped_and_listed(source: Path, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "good.mp4").write_bytes((source / "cfr" / "steady.mp4").read_bytes())
    (folder / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    out = tmp_path / "out"
    assert main(["extract", str(folder), "--out", str(out), "--workers", "0", *ARGS]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [b["path"] for b in report["bad"]] == [str(folder / "broken.mp4")]
    assert "unreadable" in report["bad"][0]["reason"]
    assert list(rows_of(out)) == ["good"] and not (out / "broken.npy").exists()
    # --strict: the same run ends with one error line and exit 2
    assert main(["extract", str(folder), "--out", str(out), "--workers", "0", "--strict",
                 *ARGS]) == 2
    errors = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
    assert len(errors) == 1 and "broken.mp4" in errors[0] and "1 of 2 videos" in errors[0]


def test_both_branches_share_the_trunk(source: Path, tmp_path: Path) -> None:
    """branch=both writes one file per branch, each equal to a single-branch run."""
    settings = ExtractSettings(source=source / "cfr", checkpoint="random", backbone="r3d_tiny",
                               seed=3, out=tmp_path / "both", branch="both", size=SIZE,
                               clip_frames=FRAMES, frame_stride=FRAME_STRIDE, stride=STRIDE,
                               workers=0, progress=False)
    result = extract(settings)
    assert result.written == 1 and result.bad == []
    single = extract(ExtractSettings(**{**settings.__dict__, "branch": "local",
                                        "out": tmp_path / "local"}))
    assert single.written == 1
    np.testing.assert_allclose(np.load(tmp_path / "both" / "steady.local.npy"),
                               np.load(tmp_path / "local" / "steady.npy"), atol=1e-6)
    assert (tmp_path / "both" / "steady.global.npy").is_file()


def test_rerun_after_a_kill_finishes_the_rest(source: Path, tmp_path: Path) -> None:
    """A run killed while writing its 2nd video leaves the 1st complete; the rerun skips it
    (byte-identical, not rewritten), removes the half-written files and does the rest."""
    import multiprocessing

    folder = tmp_path / "src"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.mp4").write_bytes((source / "cfr" / "steady.mp4").read_bytes())
    out = tmp_path / "out"
    args = ["extract", str(folder), "--out", str(out), "--workers", "0", *ARGS]
    # a forked child process (no second torch import): the command with the fault set
    child = multiprocessing.get_context("fork").Process(target=_run_with_fault,
                                                        args=(args, "kill_during_extract:2"))
    child.start()
    child.join(120)
    assert child.exitcode == -9
    assert (out / "a.npy").is_file() and not (out / "b.npy").exists()
    assert [p.name for p in out.glob(".b.npy.*.partial")]  # killed between write and rename
    before = {"a.npy": ((out / "a.npy").read_bytes(), (out / "a.npy").stat().st_mtime_ns)}
    assert main(["extract", str(folder), "--out", str(out), "--workers", "0", *ARGS]) == 0
    assert {p.name for p in out.glob("*.npy")} == {"a.npy", "b.npy", "c.npy"}
    assert not list(out.rglob("*.partial"))
    assert ((out / "a.npy").read_bytes(), (out / "a.npy").stat().st_mtime_ns) == before["a.npy"]
    assert list(rows_of(out)) == ["a", "b", "c"]
    np.testing.assert_allclose(np.load(out / "a.npy"), np.load(out / "c.npy"), atol=1e-6)


def _run_with_fault(args: list[str], fault: str) -> None:
    import os

    os.environ["CONSTCL_FAULT"] = fault
    main(args)


def test_box_features_equal_roi_align_by_hand(source: Path, tmp_path: Path) -> None:
    """--boxes: per CSV row, RoIAlign (7 x 7, aligned, scale 1/32) of the time-averaged res5
    map of the clip centred on the row's key frame (full frame, short side --size), then the
    maximum over the bins; rows in file order."""
    from torchvision.ops import roi_align

    boxes = tmp_path / "boxes.csv"
    boxes.write_text("steady,0.4,0.1,0.2,0.6,0.9,12\nsteady,1,0.0,0.0,1.0,1.0,3\n"
                     "steady,0.4,0.5,0.0,1.0,0.5,7\nother,1,0,0,1,1,1\n")
    out = tmp_path / "out"
    assert main(["extract", str(source / "cfr"), "--out", str(out), "--boxes", str(boxes),
                 "--workers", "0", *ARGS]) == 0
    got = np.load(out / "steady.boxes.npy")
    assert got.shape == (3, 64)
    row = rows_of(out)["steady"]
    assert [g["key_frame"] for g in row["box_rows"]] == [10, 25]
    assert [g["lines"] for g in row["box_rows"]] == [[1, 3], [2]]
    encoder = load_encoder("random", backbone="r3d_tiny", seed=3)
    rows = [(10, (0.1, 0.2, 0.6, 0.9)), (25, (0.0, 0.0, 1.0, 1.0)), (10, (0.5, 0.0, 1.0, 0.5))]
    for k, (key, box) in enumerate(rows):
        indices = np.clip(key - FRAME_STRIDE * (FRAMES // 2) + FRAME_STRIDE * np.arange(FRAMES),
                          0, 39).tolist()
        frames = reference_frames(source / "cfr" / "steady.mp4", indices)  # (T, 64, 96, 3)
        clip = torch.from_numpy(frames).permute(3, 0, 1, 2).float()[None] / 127.5 - 1.0
        with torch.no_grad():
            res5 = encoder.features(clip).mean(dim=2)
        roi = torch.tensor([[0.0, box[0] * 96, box[1] * 64, box[2] * 96, box[3] * 64]])
        want = roi_align(res5, roi, output_size=7, spatial_scale=1 / 32, sampling_ratio=0,
                         aligned=True).amax(dim=(2, 3))[0]
        np.testing.assert_allclose(got[k], want.numpy(), rtol=1e-4, atol=1e-5)


def test_list_source_is_mirrored_relative_to_the_list(source: Path, tmp_path: Path) -> None:
    listing = source / "videos.txt"
    listing.write_text("vfr/bursts.mp4 1\ncfr/steady.mp4 0\n")
    out = tmp_path / "out"
    try:
        assert main(["extract", str(listing), "--out", str(out), "--workers", "0", *ARGS]) == 0
    finally:
        listing.unlink()
    assert {p.relative_to(out).as_posix() for p in out.rglob("*.npy")} == {
        "vfr/bursts.npy", "cfr/steady.npy"}
    assert {r: row["label"] for r, row in rows_of(out).items()} == {"vfr/bursts": 1,
                                                                     "cfr/steady": 0}


def _rank_main(rank: int, settings: ExtractSettings, port: int, report: Path) -> None:
    import os

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    result = extract(settings)
    report.with_name(f"rank{rank}.json").write_text(json.dumps(
        {"written": result.written, "total": result.total}))


def test_two_processes_split_the_videos(source: Path, tmp_path: Path) -> None:
    """As under torchrun with 2 processes (gloo): each takes every other video, together they
    write every file once, and the index (written by process 0) lists all of them."""
    import multiprocessing
    import socket

    folder = tmp_path / "src"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.mp4").write_bytes((source / "cfr" / "steady.mp4").read_bytes())
    settings = ExtractSettings(source=folder, checkpoint="random", backbone="r3d_tiny", seed=3,
                               out=tmp_path / "out", size=SIZE, clip_frames=FRAMES,
                               frame_stride=FRAME_STRIDE, stride=STRIDE, workers=0,
                               progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_rank_main, args=(r, settings, port, tmp_path / "r.json"))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    counts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [c["written"] for c in counts] == [2, 1]  # videos a, c and b
    assert list(rows_of(tmp_path / "out")) == ["a", "b", "c"]
    assert {p.name for p in (tmp_path / "out").glob("*.npy")} == {"a.npy", "b.npy", "c.npy"}


def test_output_names_stay_inside_out(tmp_path: Path) -> None:
    """Names mirror the source; '..' in a list entry or a file outside the list's folder never
    leads outside OUT, and two videos differing only in extension keep it."""
    from constcl.data.sources import VideoItem
    from constcl.features.plan import plan_jobs

    base = tmp_path / "lists"
    items = [VideoItem(base / "a" / "x.mp4"), VideoItem(base / "a" / "x.mkv"),
             VideoItem(base / ".." / "videos" / "y.mp4"), VideoItem(tmp_path / "z.webm")]
    rels = [job.rel for job in plan_jobs(items, base)]
    resolved = str(tmp_path.resolve()).lstrip("/")
    assert rels == ["a/x.mp4", "a/x.mkv", f"abs/{resolved}/videos/y", f"abs/{resolved}/z"]


def test_bf16_features_are_close_to_fp32(source: Path, tmp_path: Path) -> None:
    common = {"source": source / "cfr", "checkpoint": "random", "backbone": "r3d_tiny",
              "seed": 3, "size": SIZE, "clip_frames": FRAMES, "frame_stride": FRAME_STRIDE,
              "stride": STRIDE, "workers": 0, "progress": False}
    extract(ExtractSettings(out=tmp_path / "fp32", **common))
    extract(ExtractSettings(out=tmp_path / "bf16", precision="bf16", **common))
    fp32, bf16 = (np.load(tmp_path / p / "steady.npy") for p in ("fp32", "bf16"))
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)
    np.testing.assert_allclose(bf16, fp32, rtol=0.1, atol=0.05 * np.abs(fp32).max())


def test_a_second_process_on_the_same_out_is_refused(source: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """extract holds --out's run-folder lock: with another process holding it, one error line
    naming the holder and nothing written."""
    import subprocess
    import sys

    out = tmp_path / "out"
    hold = ("import sys\nfrom constcl.runlock import run_lock\n"
            "with run_lock(sys.argv[1], 'other-extract'):\n"
            "    print('locked', flush=True)\n    sys.stdin.readline()\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["extract", str(source / "cfr"), "--out", str(out), "--workers", "0",
                     *ARGS]) == 2
    finally:
        holder.communicate("\n", timeout=30)
    errors = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
    assert len(errors) == 1 and "other-extract" in errors[0]
    assert not list(out.glob("*.npy")) and not (out / "extract.json").exists()


def test_non_finite_features_stop_the_run(source: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """A network that outputs NaN (here: res5 patched to) ends in one line, nothing written."""
    from constcl.features import extract as module

    original = module.load_encoder

    def nan_encoder(*args, **kwargs):
        encoder = original(*args, **kwargs)
        encoder.net.res5.register_forward_hook(lambda m, i, out: out * float("nan"))
        return encoder

    monkeypatch.setattr(module, "load_encoder", nan_encoder)
    out = tmp_path / "out"
    assert main(["extract", str(source / "cfr"), "--out", str(out), "--workers", "0",
                 *ARGS]) == 2
    errors = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
    assert len(errors) == 1 and "non-finite global features" in errors[0]
    assert "steady" in errors[0] and not list(out.rglob("*.npy"))


def test_snippet_starts_by_hand() -> None:
    from constcl.features.plan import snippet_starts

    # 100 frames at 25 fps, 16 x 2 snippets (span 31): starts <= 69, every 25 frames
    assert snippet_starts(100, 25.0, 16, 2, 1.0).tolist() == [0, 25, 50]
    # every 0.5 s at 30 fps = 15 frames; span 7 -> starts <= 33
    assert snippet_starts(40, 30.0, 4, 2, 0.5).tolist() == [0, 15, 30]
    # in frames: every 8 frames, span 15 -> starts <= 25
    assert snippet_starts(40, 25.0, 8, 2, 8, "frames").tolist() == [0, 8, 16, 24]
    # a fractional step rounds each start: 7.5 frames
    assert snippet_starts(40, 25.0, 4, 2, 0.3).tolist() == [0, 8, 15, 23, 30]
    # shorter than one snippet: one snippet at 0 (its indices clamp to the last frame)
    assert snippet_starts(10, 25.0, 16, 2, 1.0).tolist() == [0]
    # exactly one span: one snippet
    assert snippet_starts(31, 25.0, 16, 2, 1.0).tolist() == [0]
    with pytest.raises(ValueError, match="positive"):
        snippet_starts(40, 25.0, 4, 2, 0.0)
