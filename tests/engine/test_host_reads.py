"""Host reads of the training loop (issue 25): the host waits for the device once per log
interval, however many steps the interval has.

A ``HostReadCounter`` (a TorchDispatchMode counting ``aten::_local_scalar_dense`` and the copies
between a GPU and the CPU) is active around a whole tiny ``pretrain`` run, paused only while
the input batches are produced (decoding and augmentation parameters are host-side CPU values
by design). On the CPU a device-to-host copy dispatches nothing, so the interval's one copy
(``logger.read_on_host``) is counted by wrapping that function.
"""

import torch

import constcl.engine.loop as loop_module
import constcl.engine.pretrain as pretrain_module
from constcl.config import load_config
from constcl.engine.data import device_batches
from constcl.engine.logger import read_on_host
from constcl.engine.monitor import HostReadCounter
from tests.engine.conftest import tiny_overrides


def count_host_reads(world, out, name, steps, log_every, monkeypatch):
    counter = HostReadCounter()

    def batches_uncounted(*args, **kwargs):
        inner = device_batches(*args, **kwargs)
        while True:
            with counter.paused():
                batch = next(inner, None)
            if batch is None:
                return
            yield batch

    def read_counted(values):
        counter.counts["read_on_host"] += 1
        return read_on_host(values)

    monkeypatch.setattr(loop_module, "device_batches", batches_uncounted)
    monkeypatch.setattr(loop_module, "read_on_host", read_counted)
    cfg = load_config(None, tiny_overrides(world, out, name, steps=steps) + [
        f"train.log_every={log_every}", "train.checkpoint_every=1000",
        "train.deterministic=false"])
    with counter:
        pretrain_module.pretrain(cfg)
    return counter.counts


def test_host_reads_do_not_grow_with_the_steps_between_log_intervals(world, tmp_path,
                                                                      monkeypatch):
    two_short = count_host_reads(world, tmp_path, "a", steps=4, log_every=2,
                                 monkeypatch=monkeypatch)
    two_long = count_host_reads(world, tmp_path, "b", steps=10, log_every=5,
                                monkeypatch=monkeypatch)
    three_short = count_host_reads(world, tmp_path, "c", steps=6, log_every=2,
                                   monkeypatch=monkeypatch)
    # two log intervals of 2 or of 5 steps: the same reads
    assert two_long == two_short
    # one more interval: exactly one more read, the packed metric vector (read_on_host)
    assert three_short - two_short == {"read_on_host": 1}
    assert two_short["read_on_host"] == 2
    # the rest is the run's set-up and end (the final checkpoint's weight check, ...)
    assert set(two_short) == {"read_on_host", "aten::_local_scalar_dense (cpu)"}, two_short
    assert two_short["aten::_local_scalar_dense (cpu)"] <= 3, two_short


def test_counter_sees_item_float_and_copies():
    x = torch.arange(4.0)
    with HostReadCounter() as counter:
        for _ in range(3):
            x.sum().item()
        float(x[0])
        bool(x.any())
        x.to("cpu", copy=True).double().tolist()  # CPU to CPU: no wait for a device
    assert counter.counts == {"aten::_local_scalar_dense (cpu)": 5}
