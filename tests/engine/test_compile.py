"""torch.compile of the full ConST-CL forward + both losses (issue 25), on the CPU.

One graph: no graph break in the tiny model's forward (both losses included). One compilation:
20 steps with different validity masks and boxes reuse the first compilation; the step sampler
never makes a partial batch (the tail of an epoch that does not fill a step is dropped), so the
batch shape never changes either. Compiled equals eager:
the AOTAutograd graphs (forward and backward, what Inductor compiles; run eagerly here because
Inductor's C++ build of this model takes minutes on this CPU) give the eager loss, metrics and
gradients within float32 round-off.
"""

import torch
from torch._dynamo.testing import CompileCounter

from constcl.engine.sampler import StepBatchSampler
from constcl.models import build_model

B, T, SIZE, K = 2, 8, 32, 4


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return build_model("r3d_tiny", context_length=3, decoder_layers=1, decoder_units=1,
                       decoder_width=16)


def make_batch(seed):
    """Two views in [-1, 1], boxes and random validity masks (rows may be all invalid)."""
    gen = torch.Generator().manual_seed(seed)
    views = [torch.rand(B, 3, T, SIZE, SIZE, generator=gen) * 2 - 1 for _ in range(2)]
    xy = torch.rand(2, B, K, 2, generator=gen) * 0.5
    boxes = torch.cat([xy, xy + 0.1 + 0.4 * torch.rand(2, B, K, 2, generator=gen)], dim=-1)
    masks = torch.rand(2, B, K, generator=gen) < 0.6
    return {"view_a": views[0], "view_b": views[1], "boxes_a": boxes[0], "boxes_b": boxes[1],
            "mask_a": masks[0], "mask_b": masks[1]}


def test_one_graph_and_one_compilation_across_20_steps_with_varying_masks():
    """The backend is called once per graph: one call after the first step means no graph
    break (``torch._dynamo.explain`` names the reasons when there are some; see
    docs/method.md), one after 20 steps means no recompilation."""
    torch._dynamo.reset()
    model, counter = tiny_model(), CompileCounter()
    compiled = torch.compile(model, backend=counter)
    compiled(**make_batch(100))["loss"].backward()
    assert counter.frame_count == 1
    masks_seen = set()
    for step in range(20):
        batch = make_batch(step)
        masks_seen.add(batch["mask_a"].numpy().tobytes())
        compiled(**batch)["loss"].backward()
    assert len(masks_seen) == 20
    assert counter.frame_count == 1
    # the sampler's batches all have B videos, across epoch ends (13 videos: 6 steps/epoch)
    sampler = StepBatchSampler(num_videos=13, batch=B, steps=20, seed=0)
    assert {len(b) for b in sampler} == {B}


def test_compiled_step_equals_eager():
    torch._dynamo.reset()
    eager, compiled_model = tiny_model(), tiny_model()
    compiled = torch.compile(compiled_model, backend="aot_eager")
    batch = make_batch(1)
    outs = []
    for runner in (eager, compiled):
        out = runner(**batch)
        out["loss"].backward()
        outs.append(out)
    assert set(outs[0]) == set(outs[1])
    for key in outs[0]:
        torch.testing.assert_close(outs[1][key], outs[0][key], rtol=1e-4, atol=1e-5)
    grads = [{n: p.grad for n, p in m.named_parameters()} for m in (eager, compiled_model)]
    assert all(g is not None for g in grads[0].values())
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-3, atol=1e-6, msg=name)
