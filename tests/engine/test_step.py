import pytest
import torch
from torch import nn

from constcl.config import load_config
from constcl.engine.pretrain import TooManyBadSteps, pretrain, setup_device
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
    assert result.metrics["loss"] == pytest.approx(6.0)       # mean of 6 and 6
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
    assert result.grad_norm == pytest.approx(5.0)
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
        results[precision] = (result.metrics["loss"], layer.weight.detach() - before)
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
