import pytest
import torch

from constcl.engine import checkpoint as ckpt
from constcl.engine.sampler import StepBatchSampler


def test_resumed_sampler_continues_the_same_stream():
    full = list(StepBatchSampler(50, batch=4, steps=20, seed=3))
    tail = list(StepBatchSampler(50, batch=4, steps=20, seed=3, start_step=7))
    assert tail == full[7:]


def test_ranks_and_micro_batches_split_each_step():
    kw = dict(num_videos=40, batch=3, steps=5, seed=0, world=2, accumulation=2)
    per_rank = [list(StepBatchSampler(rank=r, **kw)) for r in range(2)]
    steps_per_epoch = 40 // 12
    for step in range(5):
        videos = [i for r in range(2) for mb in per_rank[r][2 * step:2 * step + 2] for _, i in mb]
        assert len(videos) == 12 and len(set(videos)) == 12  # no video twice in a step
    epochs = {e for mb in per_rank[0] for e, _ in mb}
    assert epochs == set(range(5 // steps_per_epoch + 1))


def test_each_epoch_is_a_permutation():
    batches = list(StepBatchSampler(12, batch=4, steps=3, seed=1))
    assert sorted(i for mb in batches for _, i in mb) == list(range(12))


def test_epochs_are_shuffled_anew_and_seeds_differ():
    """Each epoch is its own permutation (otherwise every epoch would repeat the batches), and
    another seed gives another stream."""
    sampler = StepBatchSampler(24, batch=4, steps=30, seed=1)  # 6 steps per epoch, 5 epochs
    orders = {}
    for mb in sampler:
        for epoch, i in mb:
            orders.setdefault(epoch, []).append(i)
    assert sorted(orders) == [0, 1, 2, 3, 4]
    assert all(sorted(o) == list(range(24)) for o in orders.values())
    assert len({tuple(o) for o in orders.values()}) == 5
    other = [i for mb in StepBatchSampler(24, batch=4, steps=6, seed=2) for _, i in mb]
    assert other != orders[0]


def test_too_small_data_set_is_a_clear_error():
    with pytest.raises(ValueError, match="batch_size"):
        StepBatchSampler(5, batch=4, steps=2, world=2)


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint({"step": step, "w": torch.full((3,), float(step))}, tmp_path, step,
                             keep=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step_00000003.pt", "step_00000004.pt"]
    assert not list(ckpt.checkpoint_dir(tmp_path).glob(".*tmp*"))
    path, state = ckpt.latest_loadable(tmp_path)
    assert state["step"] == 4 and torch.equal(state["w"], torch.full((3,), 4.0))


def test_unreadable_newest_checkpoint_falls_back(tmp_path):
    ckpt.save_checkpoint({"step": 1}, tmp_path, 1, keep=5)
    ckpt.checkpoint_path(tmp_path, 2).write_bytes(b"not a checkpoint")
    path, state = ckpt.latest_loadable(tmp_path)
    assert state["step"] == 1 and path.name == "step_00000001.pt"
    with pytest.raises(RuntimeError, match="cannot be read"):
        ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path, 2))
    with pytest.raises(FileNotFoundError):
        ckpt.load_checkpoint(tmp_path / "nope.pt")


def test_rng_state_round_trip(tmp_path):
    import random

    torch.manual_seed(5)
    random.seed(5)
    state = ckpt.rng_state()
    ckpt.save_checkpoint({"step": 1, "rng": state}, tmp_path, 1, keep=1)
    expected = (torch.rand(3), random.random())
    ckpt.set_rng_state(ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path, 1))["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
