"""Draw a :class:`RegionsResult` (matplotlib, Agg backend; ``viz.regions`` computes it).

Top: the key frames of views a and b with their K boxes (box i of either view in colour i),
joined by lines from every valid box to its argmax partner in the other view (first row a->b,
second row b->a; the positives of the region loss), and the cosine matrix of h_a (rows) and
h_b (columns) with each row's argmax ringed. Bottom, for each chosen view-a box: the box, then
the decoder's attention over view b's context frames as a heat map over the frames, in units of
the uniform weight 1/N (per layer or averaged over layers and units, as the title says), on a
diverging scale centred on uniform whose range (each row's own) is printed over the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import ConnectionPatch, Rectangle  # noqa: E402

from constcl.data.augment import from_model_range  # noqa: E402

__all__ = ["RegionsResult", "box_colour", "frame_image", "regions_figure", "save_figure"]

MATCH_GIDS = {"a": "match-a2b", "b": "match-b2a"}


@dataclass
class RegionsResult:
    """Everything :func:`regions_figure` draws (computed by ``viz.regions.compute_regions``).

    views: ``{"a", "b"}`` -> (3, T, S, S) clips in [-1, 1]; boxes: -> (K, 4) normalised
    key-frame boxes; masks: -> (K,) bool validity; similarity: (K, K) cosine of h_a (rows) and
    h_b (columns); match_a2b / match_b2a: (K,) argmax partners (into view b's / view a's boxes);
    attention: (layers, units, K, L_c, H', W') weights of view a's queries over view b's
    context, or None without a decoder; context_frames: the L_c feature-frame indices of the
    context; feature_frames: T'; label: what network this is.
    """

    views: dict[str, torch.Tensor]
    boxes: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    similarity: torch.Tensor
    match_a2b: torch.Tensor
    match_b2a: torch.Tensor
    attention: torch.Tensor | None
    context_frames: list[int]
    feature_frames: int
    label: str


def box_colour(i: int) -> tuple[float, float, float, float]:
    """Colour of box ``i`` (the same index in both views gets the same colour)."""
    return plt.get_cmap("tab10")(i % 10)


def frame_image(clip: torch.Tensor, t: int) -> np.ndarray:
    """(3, T, S, S) clip in [-1, 1] -> frame ``t`` as (S, S, 3) float in [0, 1]."""
    return from_model_range(clip[:, t]).permute(1, 2, 0).cpu().numpy()


def _draw_boxes(ax, boxes: torch.Tensor, mask: torch.Tensor, size: int, prefix: str,
                only: int | None = None) -> None:
    for i, ((x1, y1, x2, y2), valid) in enumerate(zip(boxes.tolist(), mask.tolist(),
                                                      strict=True)):
        if only is not None and i != only:
            continue
        colour = box_colour(i) if valid else (0.6, 0.6, 0.6, 1.0)
        ax.add_patch(Rectangle((x1 * size, y1 * size), (x2 - x1) * size, (y2 - y1) * size,
                               fill=False, edgecolor=colour, linewidth=2.0 if only else 1.4,
                               linestyle="-" if valid else "--"))
        ax.text(x1 * size + 1, y1 * size + 1, f"{prefix}{i}", color="white", fontsize=7,
                va="top", ha="left", bbox={"facecolor": colour, "pad": 0.5, "linewidth": 0})


def box_centres(boxes: torch.Tensor, size: int) -> np.ndarray:
    """(K, 4) normalised boxes -> (K, 2) centres (x, y) in pixels of an S = ``size`` frame."""
    b = boxes.detach().cpu().numpy().astype(np.float64)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1) * size


def _image_axes(ax, image: np.ndarray, title: str) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def _match_row(fig: plt.Figure, axes: list, r: RegionsResult, direction: str) -> None:
    """Key frames of both views with the ``direction`` ("a": a->b, "b": b->a) matches."""
    t = r.views["a"].shape[1] // 2
    size = r.views["a"].shape[-1]
    src, dst = direction, "b" if direction == "a" else "a"
    ax = {"a": axes[0], "b": axes[1]}
    for v in "ab":
        _image_axes(ax[v], frame_image(r.views[v], t), f"view {v}, key frame t={t}")
        _draw_boxes(ax[v], r.boxes[v], r.masks[v], size, v)
    match = r.match_a2b if direction == "a" else r.match_b2a
    c_src, c_dst = box_centres(r.boxes[src], size), box_centres(r.boxes[dst], size)
    for i, j in enumerate(match.tolist()):
        if not (r.masks[src][i] and r.masks[dst].any()):
            continue
        line = ConnectionPatch(xyA=tuple(c_src[i]), coordsA=ax[src].transData,
                               xyB=tuple(c_dst[j]), coordsB=ax[dst].transData,
                               color=box_colour(i), linewidth=1.6, arrowstyle="->",
                               mutation_scale=10)
        line.set_gid(MATCH_GIDS[direction])
        fig.add_artist(line)
    ax["a"].set_ylabel(f"{src} -> {dst}: argmax cosine", fontsize=8)


def _similarity_axes(ax, r: RegionsResult) -> None:
    sim = r.similarity.cpu().numpy()
    im = ax.imshow(sim, cmap="viridis")
    for i, j in enumerate(r.match_a2b.tolist()):
        if r.masks["a"][i]:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red",
                                   linewidth=1.5))
    k_a, k_b = sim.shape
    ax.set_xticks(range(k_b), [f"b{j}" for j in range(k_b)], fontsize=7)
    ax.set_yticks(range(k_a), [f"a{i}" for i in range(k_a)], fontsize=7)
    ax.set_title("cos(h_a, h_b); red: row argmax (a->b)", fontsize=8)
    plt.colorbar(im, ax=ax, fraction=0.046)


def _attention_rows(fig, r: RegionsResult, queries: Sequence[int], layer: int | None) -> None:
    """One row per query: its box on view a, then its attention over view b's context."""
    contexts = r.context_frames
    axes = fig.subplots(len(queries), 1 + len(contexts), squeeze=False)
    layers, units = r.attention.shape[:2]
    weights = r.attention.mean(dim=1) if layer is None else r.attention[layer - 1].mean(dim=0,
                                                                                        keepdim=True)
    heat_all = weights.mean(dim=0)  # (K, L_c, H', W')
    tokens = heat_all[0].numel()
    how = (f"mean over {layers} layers x {units} units" if layer is None
           else f"layer {layer} of {layers}, mean over {units} units")
    fig.suptitle(f"decoder attention of view-a boxes over view b's context ({how})\n"
                 f"colour: weight x N (N = {tokens} tokens; white = 1 = uniform, red above, "
                 "blue below; range per row); box: the query's argmax match", fontsize=9)
    t_in, size = r.views["b"].shape[1], r.views["b"].shape[-1]
    scale = t_in / r.feature_frames
    for row, q in enumerate(queries):
        heat = heat_all[q].cpu().numpy() * tokens
        spread = max(float(np.abs(heat - 1).max()), 1e-6)  # colour range centred on uniform
        ax0 = axes[row, 0]
        _image_axes(ax0, frame_image(r.views["a"], t_in // 2),
                    f"query a{q}: weight x N in {heat.min():.3f}..{heat.max():.3f}")
        _draw_boxes(ax0, r.boxes["a"], r.masks["a"], size, "a", only=q)
        match = int(r.match_a2b[q])
        for col, tf in enumerate(contexts):
            ax = axes[row, col + 1]
            first = int(tf * scale)
            frames = f"{first}" if scale <= 1 else f"{first}-{int((tf + 1) * scale) - 1}"
            _image_axes(ax, frame_image(r.views["b"], first),
                        f"b, feature frame {tf} (input {frames})")
            im = ax.imshow(heat[col], cmap="RdBu_r", alpha=0.6, vmin=1 - spread,
                           vmax=1 + spread, extent=(-0.5, size - 0.5, size - 0.5, -0.5),
                           interpolation="nearest")
            _draw_boxes(ax, r.boxes["b"], r.masks["b"], size, "b", only=match)
        plt.colorbar(im, ax=list(axes[row, 1:]), fraction=0.02, pad=0.01,
                     label="weight x N")


def regions_figure(r: RegionsResult, queries: Sequence[int], layer: int | None = None,
                   title: str = "") -> plt.Figure:
    """The whole picture of one :class:`RegionsResult`.

    ``queries``: view-a boxes whose attention is drawn; ``layer``: 1-based decoder layer, or
    None for the mean over layers. Match lines are ``ConnectionPatch`` artists of the figure
    with gid ``match-a2b`` / ``match-b2a``, from the centre of the query box (pixels of its
    view's key frame) to the centre of its partner.
    """
    n_ctx = len(r.context_frames)
    width = max(9.0, 2.2 * (1 + n_ctx))
    rows = len(queries) if r.attention is not None else 0
    fig = plt.figure(figsize=(width, 5.2 + 2.3 * rows + 0.5), layout="constrained")
    if rows:
        top, bottom = fig.subfigures(2, 1, height_ratios=[5.2, 2.3 * rows])
    else:
        top, bottom = fig, None
    grid = top.add_gridspec(2, 3, width_ratios=[1, 1, 1.1])
    for row, direction in enumerate("ab"):
        axes = [top.add_subplot(grid[row, 0]), top.add_subplot(grid[row, 1])]
        _match_row(fig, axes, r, direction)
    _similarity_axes(top.add_subplot(grid[:, 2]), r)
    note = "" if r.attention is not None else " | no decoder (variant 'region'): no attention"
    top.suptitle((title or r.label) + note + "\nRoI features h of the key-frame boxes, "
                 "network in eval mode (BatchNorm running statistics)", fontsize=10)
    if bottom is not None:
        _attention_rows(bottom, r, queries, layer)
    return fig


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 90) -> Path:
    """Save and close ``fig``; creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
