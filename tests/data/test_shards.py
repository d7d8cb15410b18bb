"""WebDataset shards: `data prepare --shards`, the streaming two-view source, ranks and workers
on distinct shards (2 processes, gloo), bad samples, and an exact resume after a kill."""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from constcl.config import ConfigError, load_config
from constcl.data.dataset import TooManyBadVideos, ViewSettings
from constcl.data.prepare import EncodeSettings, PrepareSettings, prepare
from constcl.data.sampling import ClipSpec
from constcl.data.shards import ShardList, ShardTwoViewDataset, list_shards
from constcl.engine import checkpoint as ckpt

from .video_fixtures import grey_frames, level_of

pytest.importorskip("webdataset", reason="shard sources need webdataset (the dev extra has it)")

VIDEOS_PER_CLASS, SHARDS = 6, 4
VIEWS = ViewSettings(ClipSpec(4, 2), size=16, num_regions=3)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    """12 good videos in classes a/ and b/ plus one corrupt file, prepared into 4 shards."""
    from constcl.data.encode import write_video

    src = tmp_path_factory.mktemp("shard_src")
    for c, cls in enumerate("ab"):
        (src / cls).mkdir()
        for i in range(VIDEOS_PER_CLASS):
            levels = [level_of((i + c * 7 + t) % 40) for t in range(24)]
            write_video(src / cls / f"{cls}{i}.mp4", grey_frames(levels, 48, 64), fps=25)
    (src / "a" / "broken.mp4").write_bytes(b"\x00" * 500)
    out = tmp_path_factory.mktemp("shard_out")
    prepare(PrepareSettings(str(src), str(out), encode=EncodeSettings(short_side=32),
                            shards=SHARDS, progress=False))
    return out / "shards"


def read(dataset: ShardTwoViewDataset, micro_batches, batch: int = 2) -> dict[int, list[dict]]:
    return {m: dataset.__getitems__([(m, i) for i in range(batch)]) for m in micro_batches}


def test_prepare_writes_shards_instead_of_loose_files(shard_dir):
    out = shard_dir.parent
    assert not (out / "videos").exists() and not (out / "manifest.csv").exists()
    index = json.loads((shard_dir / "index.json").read_text())
    names = sorted(p.name for p in shard_dir.glob("*.tar"))
    assert names == [f"shard-{i:06d}.tar" for i in range(SHARDS)]
    assert [s["samples"] for s in index["shards"]] == [3, 3, 3, 3]
    labels = []
    for name in names:
        with tarfile.open(shard_dir / name) as tar:
            members = tar.getnames()
            keys = sorted({m.split(".")[0] for m in members})
            assert sorted(members) == sorted(f"{k}.{e}" for k in keys for e in ("json", "mp4"))
            for key in keys:
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                labels.append((Path(meta["source"]).parent.name, meta["label"]))
    assert sorted(labels) == [("a", 0)] * 6 + [("b", 1)] * 6
    report = json.loads((out / "report.json").read_text())
    assert [Path(b["path"]).name for b in report["bad"]] == ["broken.mp4"]


def test_rerun_of_finished_shards_does_nothing(shard_dir):
    stamps = {p: p.stat().st_mtime_ns for p in shard_dir.iterdir()}
    src = json.loads((shard_dir.parent / "report.json").read_text())["files"][0]["path"]
    result = prepare(PrepareSettings(str(Path(src).parents[1]), str(shard_dir.parent),
                                     encode=EncodeSettings(short_side=32), shards=SHARDS,
                                     progress=False))
    assert result.written == 0
    assert {p: p.stat().st_mtime_ns for p in shard_dir.iterdir()} == stamps


def test_folder_and_brace_pattern_list_the_same_shards(shard_dir):
    by_folder = list_shards(shard_dir)
    by_pattern = list_shards(f"{shard_dir}/shard-{{000000..00000{SHARDS - 1}}}.tar")
    assert by_folder.urls == by_pattern.urls and len(by_folder) == SHARDS
    assert by_folder.counts == by_pattern.counts == (3, 3, 3, 3)
    with pytest.raises(FileNotFoundError, match="1 of 5 shards are missing"):
        list_shards(f"{shard_dir}/shard-{{000000..000004}}.tar")


def test_one_stream_epoch_reads_every_sample_once(shard_dir, tmp_path):
    shards = list_shards(shard_dir)
    in_order = ShardTwoViewDataset(shards, VIEWS, buffer=1, bad_dir=tmp_path)
    samples = [s for batch in read(in_order, range(6)).values() for s in batch]
    assert sorted(s["index"] for s in samples) == list(range(12))
    assert sorted(s["label"] for s in samples) == [0] * 6 + [1] * 6
    first = samples[0]
    assert first["view_a"].shape == (3, 4, 16, 16) and first["view_a"].dtype == torch.uint8
    assert first["boxes_b"].shape == (3, 4) and first["mask_b"].shape == (3,)
    shuffled = ShardTwoViewDataset(shards, VIEWS, buffer=4, bad_dir=tmp_path)
    mixed = [s["index"] for batch in read(shuffled, range(6)).values() for s in batch]
    assert len(set(mixed[:8])) == 8  # the first 12 - 4 leave the buffer before epoch 1 can
    assert mixed != [s["index"] for s in samples]


def test_a_resumed_stream_continues_exactly(shard_dir, tmp_path):
    shards = list_shards(shard_dir)

    def worker_pair():
        return [ShardTwoViewDataset(shards, VIEWS, streams=2, buffer=3, seed=5,
                                    bad_dir=tmp_path) for _ in range(2)]

    straight = worker_pair()  # a DataLoader with 2 workers: micro-batch m goes to m % 2
    reference = {m: read(straight[m % 2], [m])[m] for m in range(8)}
    resumed = worker_pair()  # resumed at micro-batch 5: worker 0 gets 5, 7; worker 1 gets 6
    again = {m: read(resumed[(m - 5) % 2], [m])[m] for m in (5, 6, 7)}
    for m, batch in again.items():
        for a, b in zip(batch, reference[m], strict=True):
            assert a["index"] == b["index"]
            assert torch.equal(a["view_a"], b["view_a"]) and torch.equal(a["boxes_b"],
                                                                         b["boxes_b"])


def test_bad_samples_are_recorded_and_never_returned(shard_dir, tmp_path):
    good = shard_dir / "shard-000000.tar"
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        for name, data in (("k1.mp4", b"\x00" * 300), ("k2.json", b'{"label": 1}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shards = ShardList((str(good), str(bad)), (3, 2))
    records = tmp_path / "bad_videos"
    dataset = ShardTwoViewDataset(shards, VIEWS, buffer=1, bad_dir=records,
                                  max_bad_fraction=1.0)
    samples = [s for batch in read(dataset, range(3)).values() for s in batch]
    assert {s["index"] for s in samples} == {0, 1, 2}  # the good shard's, each epoch
    names = sorted(p for p, _ in dataset.bad_files())
    assert names == [f"{bad}:k1", f"{bad}:k2"]
    assert sum(s["num_skipped"] for s in samples) >= 2
    only_bad = ShardTwoViewDataset(ShardList((str(bad),), (2,)), VIEWS, buffer=1,
                                   bad_dir=records, max_bad_fraction=1.0)
    with pytest.raises(TooManyBadVideos, match="no usable sample"):
        read(only_bad, [0])


def test_too_few_shards_for_the_readers_is_an_error(shard_dir, tmp_path):
    with pytest.raises(ValueError, match="4 shards, but 2 processes x 3 workers"):
        ShardTwoViewDataset(list_shards(shard_dir), VIEWS, world=2, streams=3, bad_dir=tmp_path)


def test_too_many_workers_for_the_shards_stop_before_the_run(shard_dir):
    from constcl.engine.data import training_videos

    cfg = load_config(None, [f"data.source={shard_dir}", "data.workers=5"])
    with pytest.raises(ConfigError, match="4 shards, but 1 processes x 5 data.workers"):
        training_videos(cfg)


def _rank_worker(rank: int, store: str, shard_dir: str, out_dir: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    from constcl.engine.data import build_loader

    cfg = load_config(None, [f"data.source={shard_dir}", "data.workers=2", "data.clip_frames=4",
                             "data.size=16", "data.num_regions=3", "data.shuffle_buffer=1",
                             "model.context_length=1", "train.batch_size=1", "train.steps=4"])
    loader, _, _ = build_loader(cfg, list_shards(shard_dir), torch.device("cpu"), 0,
                                Path(out_dir) / f"run{rank}")
    indices = [int(batch["index"][0]) for batch in loader]
    torch.save(indices, os.path.join(out_dir, f"rank{rank}.pt"))
    tdist.barrier()
    tdist.destroy_process_group()


def test_ranks_and_workers_read_distinct_shards(shard_dir, tmp_path):
    mp.start_processes(_rank_worker, nprocs=2, join=True, start_method="fork",
                       args=(str(tmp_path / "store"), str(shard_dir), str(tmp_path)))
    readers = {}
    for rank in range(2):
        indices = torch.load(tmp_path / f"rank{rank}.pt")
        assert len(indices) == 4
        for m, index in enumerate(indices):  # micro-batch m comes from worker m % 2
            readers.setdefault((rank, m % 2), set()).add(index // 3)  # 3 samples per shard
    # one shard per (rank, worker) in the first epoch: four readers, four distinct shards
    assert all(len(s) == 1 for s in readers.values())
    assert sorted(next(iter(s)) for s in readers.values()) == [0, 1, 2, 3]


def _pretrain(shard_dir: Path, out: Path, name: str, fault: str | None = None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(ckpt.FAULT_ENV, None)
    if fault:
        env[ckpt.FAULT_ENV] = fault
    overrides = [f"data.source={shard_dir}", "data.clip_frames=8", "data.size=32",
                 "data.workers=2", "data.num_regions=4", "data.shuffle_buffer=3",
                 "model.backbone=r3d_tiny", "model.context_length=3", "model.sync_bn=false",
                 "train.steps=4", "train.batch_size=2", "train.checkpoint_every=2",
                 "train.log_every=1", "train.deterministic=true", "train.progress=plain",
                 f"train.out_dir={out}", f"train.run_name={name}", "train.device=cpu",
                 "train.cpu_threads=1", "optim.warmup_steps=2"]
    return subprocess.run([sys.executable, "-m", "constcl", "pretrain", "demo", *overrides],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_pretraining_on_shards_resumes_bit_identically_after_a_kill(shard_dir, tmp_path):
    straight = _pretrain(shard_dir, tmp_path, "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = _pretrain(shard_dir, tmp_path, "killed", fault="kill_at_step:3")
    assert killed.returncode != 0
    resumed = _pretrain(shard_dir, tmp_path, "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step 2" in resumed.stderr
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "straight", 4))["model"]
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "killed", 4))["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert np.isfinite([json.loads(x)["loss"] for x in
                        (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]).all()
