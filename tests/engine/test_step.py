import pytest
import torch
from torch import nn

from constcl.config import load_config
from constcl.engine.loop import TooManyBadSteps
from constcl.engine.pretrain import pretrain
from constcl.engine.setup import setup_device
from constcl.engine.step import TrainStep
from tests.engine.conftest import tiny_overrides


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = (self.w * x).sum()
        return {"loss": loss, "double": 2 * loss}


def test_step_updates_and_averages_micro_batches():
    model = Toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = TrainStep(model, opt, "fp32", "cpu")
    result = step([{"x": torch.tensor([1.0, 2.0, 3.0])}, {"x": torch.tensor([3.0, 2.0, 1.0])}],
                  lr=0.5)
    assert not result.skipped
    assert float(result.metrics["loss"]) == pytest.approx(6.0)       # mean of 6 and 6
    # gradient of the mean loss = mean of x = (2, 2, 2); lr 0.5 was applied
    assert model.w.tolist() == pytest.approx([0.0, 0.0, 0.0])


def test_non_finite_loss_skips_the_step():
    model = Toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = TrainStep(model, opt, "fp32", "cpu")
    result = step([{"x": torch.tensor([1.0, float("nan"), 0.0])}], lr=0.1)
    assert result.skipped
    assert torch.equal(model.w, torch.ones(3)) and not opt.state


def test_clipping_reports_the_norm():
    model = Toy()
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=1.0), "fp32", "cpu",
                     clip_grad_norm=1.0)
    result = step([{"x": torch.tensor([3.0, 4.0, 0.0])}], lr=1.0)
    assert float(result.grad_norm) == pytest.approx(5.0)
    assert model.w.tolist() == pytest.approx([1 - 0.6, 1 - 0.8, 1.0])


def test_bf16_autocast_on_cpu_steps_like_fp32():
    """Under bf16 autocast a linear layer's loss and update match fp32 to bf16 precision."""
    results = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        layer = nn.Linear(16, 4)

        class Wrapped(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.layer = inner

            def forward(self, x):
                return {"loss": self.layer(x).float().pow(2).mean()}

        model = Wrapped(layer)
        before = layer.weight.detach().clone()
        step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), precision, "cpu")
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
        result = step([{"x": x}], lr=0.1)
        assert not result.skipped
        results[precision] = (float(result.metrics["loss"]), layer.weight.detach() - before)
    assert results["bf16"][0] == pytest.approx(results["fp32"][0], rel=2e-2)
    torch.testing.assert_close(results["bf16"][1], results["fp32"][1], rtol=5e-2, atol=1e-3)
    assert results["bf16"][1].abs().sum() > 0


def test_too_many_bad_steps_stop_the_run(world, tmp_path):
    overrides = tiny_overrides(world, tmp_path, "diverge", steps=20)
    cfg = load_config(None, overrides + ["optim.base_lr=1e37", "optim.warmup_steps=0",
                                         "train.max_bad_steps=3"])
    with pytest.raises(TooManyBadSteps, match="3 consecutive steps"):
        pretrain(cfg)


def test_cpu_runs_bf16_as_fp32_and_says_so(caplog):
    cfg = load_config(None, ["train.device=cpu", "train.precision=bf16", "train.cpu_threads=1"])
    threads = torch.get_num_threads()
    try:
        with caplog.at_level("INFO", logger="constcl.train"):
            assert setup_device(cfg).type == "cpu"
    finally:
        torch.set_num_threads(threads)
    assert cfg.train.precision == "fp32"
    assert [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()] == [
        "precision bf16 is not used on CPU (slower than fp32 there); training in fp32"]


def test_fp16_is_not_a_precision():
    with pytest.raises(ValueError, match="precision"):
        TrainStep(Toy(), torch.optim.SGD(Toy().parameters(), lr=0.1), "fp16", "cpu")


class Small(nn.Module):
    """A linear layer and a bias-free one (decayed and not decayed groups); ``poison`` scales
    the loss (NaN: non-finite loss and gradient), ``offset`` is added to it (NaN: non-finite
    loss, finite gradient) and ``grad_poison`` scales only the gradient (Inf: finite loss,
    non-finite gradient)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(3, 2, bias=False)

    def forward(self, x, poison, grad_poison, offset):
        h = _ScaleGrad.apply(self.b(torch.tanh(self.a(x))), grad_poison)
        loss = h.pow(2).mean() * poison + offset
        return {"loss": loss, "h_mean": h.detach().mean(), "x_sum": x.sum()}


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def _batch(seed, poison=1.0, grad_poison=1.0, offset=0.0):
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(seed))
    return {"x": x, "poison": torch.tensor(poison), "grad_poison": torch.tensor(grad_poison),
            "offset": torch.tensor(offset)}


def _run(optimizer_name, schedule, clip=0.0):
    """Steps of ``schedule`` (lists of micro-batches); returns the model, optimiser, results."""
    from constcl.engine.optim import build_optimizer

    model = Small()
    opt = build_optimizer(model, optimizer_name, lr=0.5, momentum=0.9, weight_decay=0.01)
    step = TrainStep(model, opt, "fp32", "cpu", clip_grad_norm=clip)
    return model, opt, [step(micro, lr=0.5 + 0.1 * i) for i, micro in enumerate(schedule)]


def _state(model, opt):
    return ([p.detach().clone() for p in model.parameters()],
            [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()])


@pytest.mark.parametrize("optimizer_name", ["sgd", "lars"])
@pytest.mark.parametrize("bad", [{"poison": float("nan")}, {"grad_poison": float("inf")},
                                 {"poison": float("inf")}, {"offset": float("nan")}])
def test_a_non_finite_step_mid_interval_changes_nothing(optimizer_name, bad):
    """Three steps with the second non-finite (in its second micro-batch) end with the weights
    and momentum buffers of the two finite steps alone, bit for bit; the skipped step's
    learning rate is not used by the next step (the rates follow the step index)."""
    good1, good3 = [_batch(1), _batch(2)], [_batch(5), _batch(6)]
    bad2 = [_batch(3), _batch(4, **bad)]
    model, opt, results = _run(optimizer_name, [good1, bad2, good3])
    assert [r.skipped for r in results] == [False, True, False]
    # the reference: step 0, (nothing), step 2 at the same rates
    ref_model = Small()
    from constcl.engine.optim import build_optimizer

    ref_opt = build_optimizer(ref_model, optimizer_name, lr=0.5, momentum=0.9, weight_decay=0.01)
    ref_step = TrainStep(ref_model, ref_opt, "fp32", "cpu")
    ref_step(good1, lr=0.5)
    ref_step(good3, lr=0.7)
    for got, want in zip(_state(model, opt), _state(ref_model, ref_opt), strict=True):
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g, w)


def test_skipped_first_step_of_a_built_optimiser_keeps_zero_momentum():
    model, opt, results = _run("sgd", [[_batch(1, poison=float("nan"))]])
    assert results[0].skipped
    weights, buffers = _state(model, opt)
    assert all(torch.equal(w, p) for w, p in zip(weights, Small().parameters(), strict=True))
    assert all(not b.any() for b in buffers)


def test_zero_momentum_buffers_give_the_lazily_created_first_step():
    """build_optimizer's zero buffers vs torch's own first step (buffer = first update)."""
    from constcl.engine.optim import build_optimizer

    for name in ("sgd", "lars"):
        models = [Small(), Small()]
        built = build_optimizer(models[0], name, lr=0.5, momentum=0.9, weight_decay=0.01)
        lazy = build_optimizer(models[1], name, lr=0.5, momentum=0.9, weight_decay=0.01)
        lazy.state.clear()
        for m, o in zip(models, (built, lazy), strict=True):
            for seed in (1, 2):
                o.zero_grad()
                m(**_batch(seed))["loss"].backward()
                o.step()
        for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
            assert torch.equal(p, q)


def test_metrics_and_guard_of_an_interval_leave_out_the_skipped_step():
    """The loop's device-side window: the mean of each metric over the applied steps only,
    and the guard's counters; nothing is read on the host until read_on_host."""
    from constcl.engine.logger import MetricWindow, read_on_host
    from constcl.engine.step import SkipGuard

    schedule = [[_batch(1)], [_batch(2, poison=float("nan"))], [_batch(3)], [_batch(4)]]
    _, _, results = _run("sgd", schedule)
    window, guard = MetricWindow(), SkipGuard(limit=2, device=torch.device("cpu"))
    for step, r in enumerate(results, start=1):
        window.add(r.metrics, r.ok)
        guard.add(r.ok, step)
    read = read_on_host({**window.means(), **guard.values})
    applied = [results[i] for i in (0, 2, 3)]
    for key in ("loss", "h_mean", "x_sum"):
        want = sum(float(r.metrics[key]) for r in applied) / 3
        assert read[key] == pytest.approx(want, rel=1e-12)
    assert read["x_sum"] == pytest.approx(sum(float(_batch(s)["x"].sum()) for s in (1, 3, 4)) / 3)
    assert {k: read[k] for k in SkipGuard.KEYS} == {"in_row": 0, "skipped": 1, "last": 2,
                                                   "limit_step": 0}
    guard.add(torch.tensor(False), 5)
    guard.add(torch.tensor(False), 6)
    assert int(guard.values["limit_step"]) == 6 and int(guard.values["in_row"]) == 2


def test_all_skipped_interval_logs_no_metric():
    from constcl.engine.logger import MetricWindow, read_on_host

    _, _, results = _run("sgd", [[_batch(1, poison=float("nan"))]])
    window = MetricWindow()
    window.add(results[0].metrics, results[0].ok)
    assert read_on_host(window.means()) == {}


def test_clipping_without_a_host_read_clips_like_by_hand():
    from constcl.engine.monitor import HostReadCounter

    model = Toy()
    opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    step = TrainStep(model, opt, "fp32", "cpu", clip_grad_norm=1.0)
    step([{"x": torch.tensor([0.0, 0.0, 1.0])}], lr=0.0)  # creates the momentum buffer
    with HostReadCounter() as counter:
        result = step([{"x": torch.tensor([3.0, 4.0, 0.0])}], lr=1.0)
    assert counter.total == 0
    assert float(result.grad_norm) == pytest.approx(5.0)
    # momentum 0.9 * (0, 0, 1) + clipped gradient (0.6, 0.8, 0); clipping scales by
    # max_norm / (norm + 1e-6)
    assert model.w.tolist() == pytest.approx([1 - 0.6, 1 - 0.8, 1 - 0.9], abs=1e-5)


def test_too_many_bad_steps_stop_before_a_checkpoint_between_log_steps(world, tmp_path):
    """With reads only at log steps, the guard is also read before a checkpoint that falls
    between them: the run stops there and does not save that checkpoint."""
    from constcl.engine import checkpoint as ckpt

    overrides = tiny_overrides(world, tmp_path, "diverge", steps=20)
    cfg = load_config(None, overrides + ["optim.base_lr=1e37", "optim.warmup_steps=0",
                                         "train.max_bad_steps=2", "train.log_every=10",
                                         "train.checkpoint_every=3"])
    with pytest.raises(TooManyBadSteps, match=r"2 consecutive steps .* noticed at step 3\)"):
        pretrain(cfg)
    assert ckpt.list_checkpoints(tmp_path / "diverge") == []


def test_an_interval_with_skipped_steps_logs_the_mean_of_its_applied_steps(world, tmp_path,
                                                                          caplog):
    """A diverging run (step 1 applied, then NaN losses): the line of a 5-step interval holds
    the applied step's metrics (as a run logging every step shows them), and one message
    counts the skipped steps."""
    import json

    lines = {}
    for log_every in (1, 5):
        cfg = load_config(None, tiny_overrides(world, tmp_path, f"every{log_every}", steps=5) + [
            "optim.base_lr=1e37", "optim.warmup_steps=0", "train.max_bad_steps=100",
            f"train.log_every={log_every}", "train.checkpoint_every=100"])
        with caplog.at_level("INFO", logger="constcl.train"):
            run_dir = pretrain(cfg)
        lines[log_every] = [json.loads(x) for x in
                            (run_dir / "metrics.jsonl").read_text().splitlines()]
    every_step, interval = lines[1], lines[5]
    assert [r["step"] for r in interval] == [5]
    assert "loss" in every_step[0] and all("loss" not in r for r in every_step[1:])
    for key in ("loss", "loss_global", "global_accuracy", "global_entropy"):
        assert interval[0][key] == pytest.approx(every_step[0][key], rel=1e-9), key
    assert "step 5: 4 of the last 5 steps skipped for a NaN/Inf loss or gradient (the last at " \
           "step 5; 4 in a row now)" in caplog.messages


@pytest.mark.parametrize("optimizer_name", ["sgd", "lars"])
def test_masked_step_when_ok_is_the_plain_step(optimizer_name):
    """step(ok=True) of MaskedSGD / LARS equals their plain step (torch's SGD for sgd) to the
    last bits (a product and a sum instead of torch's add with alpha); step(ok=False) changes
    nothing."""
    from constcl.engine.optim import build_optimizer

    results = []
    for ok in (None, torch.tensor(True), torch.tensor(False)):
        model = Small()
        opt = build_optimizer(model, optimizer_name, lr=0.5, momentum=0.9, weight_decay=0.01)
        for seed in (1, 2):
            opt.zero_grad()
            model(**_batch(seed))["loss"].backward()
            opt.step() if ok is None else opt.step(ok=ok)
        results.append(_state(model, opt))
    plain, masked, skipped = results
    for a, b in zip(plain[0] + plain[1], masked[0] + masked[1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    assert all(torch.equal(w, p) for w, p in zip(skipped[0], Small().parameters(), strict=True))
    assert all(not b.any() for b in skipped[1])


def test_other_optimisers_are_restored_from_a_snapshot():
    """An optimiser without step(ok=...) (torch's Adam): a NaN step after the first leaves its
    parameters and every state tensor (step count, both moments) as they were."""
    model = Small()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    step = TrainStep(model, opt, "fp32", "cpu")
    step([_batch(1)], lr=0.1)

    def snapshot():
        return ([p.detach().clone() for p in model.parameters()],
                [v.clone() for p in model.parameters() for v in opt.state[p].values()])

    before = snapshot()
    assert step([_batch(2, offset=float("nan"))], lr=0.1).skipped
    for got, want in zip(snapshot(), before, strict=True):
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    step([_batch(3)], lr=0.1)
    assert all(int(v["step"]) == 2 for v in opt.state.values())
