"""What the region branch matches and attends to, for one video (``constcl viz regions``).

For a pretraining run's checkpoint (or the same network at random init, for contrast), sample
the two augmented views of a video exactly as training does (``data.preview.sample_views``:
the run's clip length, stride, crop size and region generator), pass them through the model in
eval mode (BatchNorm running statistics) and collect:

* the RoI features h_a, h_b of each view's K key-frame boxes (L2-normalised), their cosine
  matrix and the argmax partners the region loss uses as positives
  (``losses.region_info_nce.match_boxes``: a->b row-wise, b->a column-wise);
* for ``constcl`` runs, the region decoder's attention of view a's queries over view b's
  context tokens (``RegionHead.translate_with_attention``), as (layers, units, K, L_c, H', W').

:func:`run` draws them with :func:`constcl.viz.figure.regions_figure` into one PNG.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from constcl.config import Config, apply_dict
from constcl.data.preview import sample_views
from constcl.engine.checkpoint import latest_loadable, load_checkpoint
from constcl.errors import ConstclError
from constcl.losses.region_info_nce import match_boxes
from constcl.models.constcl import REGION_VARIANTS, ConSTCL
from constcl.models.region_head import context_indices, roi_features
from constcl.network import model_from_config
from constcl.viz.figure import RegionsResult, regions_figure, save_figure

__all__ = ["RegionsResult", "RegionsSettings", "compute_regions", "load_run_model", "run"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RegionsSettings:
    """``constcl viz regions``: matches and decoder attention of a run's region branch.

    run_dir: a pretraining run folder (``config.yaml``, ``checkpoints/step_*.pt``).
    video: any video file the data pipeline can decode.
    out: the PNG to write.
    checkpoint: a checkpoint file (default: the run's newest loadable one).
    random_init: draw the same network with freshly initialised weights (seed ``seed``)
        instead of the checkpoint's, for contrast.
    seed: seed of the two sampled views (and of the random-init weights).
    queries: view-a boxes (0-based) whose attention maps are drawn.
    layer: decoder layer (1-based) whose attention is drawn; None: the mean over all layers.
    """

    run_dir: Path
    video: Path
    out: Path
    checkpoint: Path | None = None
    random_init: bool = False
    seed: int = 0
    queries: tuple[int, ...] = (0, 1, 2)
    layer: int | None = None

    def __post_init__(self) -> None:
        for name in ("run_dir", "video", "out"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        if not self.queries:
            raise ValueError("queries must name at least one view-a box")
        if any(q < 0 for q in self.queries):
            raise ValueError(f"queries must be box indices >= 0; got {list(self.queries)}")
        if self.layer is not None and self.layer < 1:
            raise ValueError(f"layer is 1-based; got {self.layer}")
        if self.random_init and self.checkpoint is not None:
            raise ValueError("give either random_init or a checkpoint, not both")


def _run_config(run_dir: Path, state: dict | None) -> Config:
    """The run's config: the checkpoint's copy, else ``config.yaml`` (not validated: the
    training data need not exist here)."""
    import yaml

    cfg = Config()
    if state is not None and "config" in state:
        apply_dict(cfg, json.loads(state["config"]))
        return cfg
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConstclError(f"{run_dir} is not a pretraining run folder: no config.yaml")
    apply_dict(cfg, yaml.safe_load(path.read_text()) or {})
    return cfg


def load_run_model(s: RegionsSettings) -> tuple[ConSTCL, Config, str]:
    """The run's full model (heads included) in eval mode, its config and a label."""
    if not s.run_dir.is_dir():
        raise ConstclError(f"run folder {str(s.run_dir)!r} does not exist")
    state, label = None, f"random init (seed {s.seed})"
    if not s.random_init:
        if s.checkpoint is not None:
            state = load_checkpoint(s.checkpoint)
        else:
            found = latest_loadable(s.run_dir)
            if found is None:
                raise ConstclError(f"{s.run_dir}: no loadable checkpoint under checkpoints/")
            state = found[1]
        label = f"{s.run_dir.name}, step {state.get('step', '?')}"
    cfg = _run_config(s.run_dir, state)
    m = cfg.model
    if m.variant not in REGION_VARIANTS:
        raise ConstclError(f"{s.run_dir} trained variant {m.variant!r}, which has no region "
                           f"branch")
    with torch.random.fork_rng(devices=[]):  # the random-init weights, without side effects
        torch.manual_seed(s.seed)
        model = model_from_config(cfg)
    if state is not None:
        model.load_state_dict(state["model"])
    return model.eval(), cfg, f"{label} ({m.variant}, {m.backbone})"


@torch.no_grad()
def compute_regions(model: ConSTCL, views: dict[str, torch.Tensor],
                    boxes: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                    label: str = "") -> RegionsResult:
    """Matches and attention of one pair of views.

    Args:
        model: a region variant (``region`` or ``constcl``), in eval mode.
        views: ``{"a", "b"}`` -> (3, T, S, S) clips in [-1, 1].
        boxes: -> (K, 4) normalised key-frame boxes; masks: -> (K,) bool validity.
    """
    head = model.region_head
    if head is None:
        raise ConstclError(f"variant {model.variant!r} has no region head")
    clips = torch.stack([views["a"], views["b"]])
    res4 = model.backbone.forward_trunk(clips)["res4"]
    local = model._local_map(res4, None)  # (2, C, T', H', W'): what the region head reads
    fmap = F.normalize(local, dim=1)
    key = fmap.shape[2] // 2
    h_raw = roi_features(fmap[:, :, key], torch.stack([boxes["a"], boxes["b"]]))  # (2, K, C)
    h = F.normalize(h_raw, dim=-1)  # as region_info_nce normalises them
    mask = torch.stack([masks["a"], masks["b"]]).bool()
    idx_a2b, idx_b2a = match_boxes(h[:1], h[1:], mask[:1], mask[1:])
    attention, context = None, []
    if head.use_context:
        context = context_indices(fmap.shape[2], head.context_length)
        memory = head.context_tokens(fmap[1:])  # view b's context for view a's queries
        _, weights = head.translate_with_attention(h_raw[:1], memory)  # the queries h_a
        layers, _, units, k, _ = weights.shape
        attention = weights[:, 0].reshape(layers, units, k, len(context), *fmap.shape[-2:])
    return RegionsResult(views=views, boxes=boxes, masks={v: masks[v].bool() for v in "ab"},
                         similarity=h[0] @ h[1].T, match_a2b=idx_a2b[0], match_b2a=idx_b2a[0],
                         attention=attention, context_frames=context,
                         feature_frames=fmap.shape[2], label=label)


def run(settings: RegionsSettings) -> RegionsResult:
    """Load the model, sample the views of ``settings.video``, compute matches and attention
    and write the figure to ``settings.out``; returns what was drawn."""
    model, cfg, label = load_run_model(settings)
    d = cfg.data
    sample, views = sample_views(settings.video, seed=settings.seed, size=d.size,
                                 frames=d.clip_frames, stride=d.frame_stride,
                                 regions=d.region_generator, num_regions=d.num_regions,
                                 boxes_dir=d.boxes_dir or None)
    boxes = {v: sample[f"boxes_{v}"].float() for v in "ab"}
    masks = {v: sample[f"mask_{v}"].bool() for v in "ab"}
    k = boxes["a"].shape[0]
    bad = [q for q in settings.queries if q >= k]
    if bad:
        raise ValueError(f"queries {bad} are not boxes of view a (K = {k}: 0..{k - 1})")
    layers = model.region_head.layers if model.region_head.use_context else []
    if settings.layer is not None and settings.layer > len(layers):
        raise ValueError(f"layer {settings.layer} does not exist: the decoder has "
                         f"{len(layers)} layer(s)")
    result = compute_regions(model, views, boxes, masks, label)
    title = f"{settings.video.name}: {label}, views seed {settings.seed}"
    fig = regions_figure(result, settings.queries, settings.layer, title)
    save_figure(fig, settings.out)
    log.info("wrote %s", settings.out)
    return result
