"""The supervised reference (model.variant=supervised): trained on the training split's labels
only, with the number of classes taken from the data and recorded in the run's config."""

import csv
import json

import pytest
import yaml

from constcl.config import ConfigError, load_config
from constcl.data.sources import list_videos
from constcl.engine.data import resolve_num_classes, synthetic_train_split
from constcl.engine.presets import preset_path
from tests.engine.conftest import tiny_overrides
from tests.engine.test_pretrain_e2e import run_pretrain


def _split(world):
    with open(world.parent / "videos.csv") as f:
        rows = list(csv.DictReader(f))
    return {r["path"] for r in rows if r["split"] == "train"}, {
        r["path"] for r in rows if r["split"] == "val"}


def test_synthetic_train_split_drops_every_val_video(world):
    train, val = _split(world)
    assert train and val
    items = synthetic_train_split(world.parent, list_videos(world))
    kept = {item.path.relative_to(world.parent).as_posix() for item in items}
    assert kept == train


def test_num_classes_from_the_labels_and_unlabelled_videos_refused(world):
    cfg = load_config(preset_path("demo"), ["model.variant=supervised"])
    items = list_videos(world)
    resolve_num_classes(cfg, items)
    assert cfg.model.num_classes == max(i.label for i in items) + 1
    cfg.model.num_classes = 2  # fewer than the labels found
    with pytest.raises(ConfigError, match="num_classes=2"):
        resolve_num_classes(cfg, items)
    unlabelled = [items[0].__class__(items[0].path)]
    with pytest.raises(ConfigError, match="needs a label for every training video"):
        resolve_num_classes(load_config(preset_path("demo"), []), unlabelled)


def test_supervised_run_trains_on_train_labels_and_records_its_classes(world, tmp_path):
    train, _ = _split(world)
    source = tmp_path / "train.csv"
    classes = sorted({p.split("/")[1] for p in train})
    with source.open("w") as f:
        f.write("path,label\n" + "".join(
            f"{world.parent / p},{p.split('/')[1]}\n" for p in sorted(train)))
    overrides = tiny_overrides(world, tmp_path, "sup", steps=3)
    overrides[0] = f"data.source={source}"
    proc = run_pretrain(overrides + ["model.variant=supervised"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "sup"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(0.0 <= r["train_accuracy"] <= 1.0 and r["loss_supervised"] > 0 for r in rows)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["num_classes"] == len(classes)
    assert (run / "backbone.safetensors").is_file()
