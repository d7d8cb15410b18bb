"""Region head g(h, F'_c) of ConST-CL (docs/spec.md section 2).

Pipeline for a pair of views a, b with local-branch maps (B, C, T', H', W'):

1. F = map L2-normalised over channels at every (t, y, x).
2. h = RoIAlign of the K key-frame boxes on F[:, :, T'/2] (4 x 4 bins, one centred sample per
   bin, averaged) -> (B, K, C).
3. Context tokens = L_c frames of the *other* view's F around T'/2, each token with a learned
   positional code appended -> (B, L_c * H' * W', C + 16).
4. A decoder of 3 layers x 3 independent 128-wide units maps the queries h through the context.
5. z = Linear(384 -> C). The same head serves a->b and b->a.

The ``region`` ablation replaces steps 3-4 by an MLP on h (no context).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align


def roi_features(fmap: torch.Tensor, boxes: torch.Tensor, output_size: int = 4) -> torch.Tensor:
    """Average RoIAlign feature of each box on one time slice.

    Args:
        fmap: (B, C, H, W) feature map of one time slice.
        boxes: (B, K, 4) normalised (x1, y1, x2, y2) in the clip's coordinates.
        output_size: bins per side; each bin is sampled once at its centre.

    Returns:
        (B, K, C): the mean over the output_size^2 bilinear samples. Feature cell k is taken to
        sit at coordinate k (the reference's convention): a normalised x maps to x * W, and
        torchvision's ``aligned=True`` half-pixel shift is undone by adding 0.5. Samples are
        clamped to the map's extent (bilinear, border-replicated); no normalisation inside.
    """
    if fmap.dim() != 4 or boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"expected fmap (B, C, H, W) and boxes (B, K, 4); got "
                         f"{tuple(fmap.shape)} and {tuple(boxes.shape)}")
    batch, channels, height, width = fmap.shape
    if boxes.shape[0] != batch:
        raise ValueError(f"fmap has batch {batch} but boxes have {boxes.shape[0]}")
    k = boxes.shape[1]
    scale = boxes.new_tensor([width, height, width, height])
    cell_boxes = (boxes.float() * scale + 0.5).reshape(-1, 4)
    batch_idx = torch.arange(batch, device=boxes.device).repeat_interleave(k)
    rois = torch.cat([batch_idx[:, None].to(cell_boxes), cell_boxes], dim=1)
    pooled = roi_align(fmap.float(), rois, output_size, spatial_scale=1.0, sampling_ratio=1,
                       aligned=True)
    return pooled.mean(dim=(2, 3)).reshape(batch, k, channels)


def context_indices(num_frames: int, context_length: int) -> list[int]:
    """Indices of the L_c context frames: centred on num_frames // 2, stride num_frames // L_c.

    T' = 8: L_c = 1 -> [4]; 3 -> [2, 4, 6]; 5 -> [2, 3, 4, 5, 6].
    """
    if not isinstance(num_frames, int) or num_frames <= 0:
        raise ValueError(f"num_frames must be a positive int; got {num_frames!r}")
    check_context_length(context_length)
    if context_length > num_frames:
        raise ValueError(f"context_length ({context_length}) must not exceed the number of "
                         f"feature frames ({num_frames})")
    stride = num_frames // context_length
    key, half = num_frames // 2, context_length // 2
    return [key + i * stride for i in range(-half, half + 1)]


def check_context_length(context_length: int) -> None:
    """Raise ValueError naming ``context_length`` unless it is a positive odd int."""
    if not isinstance(context_length, int) or context_length <= 0 or context_length % 2 == 0:
        raise ValueError(f"context_length must be a positive odd int (1, 3, 5, ...); "
                         f"got {context_length!r}")


class PositionalCode(nn.Module):
    """Learned code of centred (t, y, x) token coordinates: t -> 8 dims, (y, x) -> 8 dims."""

    def __init__(self, hidden: int = 4, out: int = 8) -> None:
        super().__init__()
        self.temporal = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, out))
        self.spatial = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, out))
        self.out_dim = 2 * out

    def forward(self, t: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Codes (t * h * w, 16) in (t, y, x) raster order; coordinates minus their mean."""
        grid = torch.stack(torch.meshgrid(
            torch.arange(t, device=device), torch.arange(h, device=device),
            torch.arange(w, device=device), indexing="ij"), dim=-1).float().reshape(-1, 3)
        grid = grid - grid.mean(dim=0, keepdim=True)
        return torch.cat([self.temporal(grid[:, :1]), self.spatial(grid[:, 1:])], dim=1)


def relative_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy ``-sum_n p_n log p_n`` of attention weights (..., N) over their last axis,
    divided by ``log N``: 1.0 is uniform attention, 0.0 all weight on one token."""
    entropy = -(weights * weights.clamp_min(1e-30).log()).sum(dim=-1)
    return entropy / math.log(weights.shape[-1])


class DecoderLayer(nn.Module):
    """``num_units`` independent attention units of width ``width``, outputs concatenated.

    Unit u: q = Wq x, k = Wk M, v = Wv M; o = LayerNorm(softmax(q k^T / sqrt(width)) v + q);
    out = W2 GELU(W1 o). The units are computed together (head dimension) but share nothing.
    x: (B, K, query_dim); memory M: (B, N, memory_dim) -> (B, K, num_units * width).
    """

    def __init__(self, query_dim: int, memory_dim: int, num_units: int = 3, width: int = 128,
                 eps: float = 1e-12) -> None:
        super().__init__()
        self.num_units, self.width, self.eps = num_units, width, eps
        self.q = nn.Linear(query_dim, num_units * width)
        self.k = nn.Linear(memory_dim, num_units * width)
        self.v = nn.Linear(memory_dim, num_units * width)
        self.norm_weight = nn.Parameter(torch.ones(num_units, width))
        self.norm_bias = nn.Parameter(torch.zeros(num_units, width))
        bound = 1.0 / math.sqrt(width)  # nn.Linear's default init, per unit
        self.w1 = nn.Parameter(torch.empty(num_units, width, width).uniform_(-bound, bound))
        self.b1 = nn.Parameter(torch.empty(num_units, width).uniform_(-bound, bound))
        self.w2 = nn.Parameter(torch.empty(num_units, width, width).uniform_(-bound, bound))
        self.b2 = nn.Parameter(torch.empty(num_units, width).uniform_(-bound, bound))

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, U*W) -> (B, U, N, W)
        return x.unflatten(-1, (self.num_units, self.width)).transpose(1, 2)

    def attention(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """The attention weights of :meth:`forward`, written out for inspection (``viz``).

        x: (B, K, query_dim); memory: (B, N, memory_dim) -> (B, U, K, N) softmax(q k^T /
        sqrt(width)) per unit; each row sums to 1 over the N memory tokens.
        """
        q, k = self._split(self.q(x)), self._split(self.k(memory))
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.width), dim=-1)

    def forward(self, x: torch.Tensor, memory: torch.Tensor,
                entropies: list[torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, K, query_dim), memory (B, N, memory_dim) -> (B, K, num_units * width). With a
        list ``entropies``, appends this layer's attention entropy per unit and query, (B, U, K)
        divided by log N (:func:`relative_entropy`; from the same q and k, no gradient)."""
        q, k, v = self._split(self.q(x)), self._split(self.k(memory)), self._split(self.v(memory))
        if entropies is not None:
            with torch.no_grad():
                logits = q.detach() @ k.detach().transpose(-2, -1) / math.sqrt(self.width)
                entropies.append(relative_entropy(torch.softmax(logits.float(), dim=-1)))
        o = F.scaled_dot_product_attention(q, k, v) + q  # scale 1/sqrt(width)
        o = F.layer_norm(o, (self.width,), eps=self.eps)
        o = o * self.norm_weight[:, None] + self.norm_bias[:, None]
        # W (U, out, in) applied per unit: y[b, u, n, i] = sum_j o[b, u, n, j] W[u, i, j]
        o = torch.einsum("bunj,uij->buni", o, self.w1) + self.b1[:, None]
        o = torch.einsum("bunj,uij->buni", F.gelu(o), self.w2) + self.b2[:, None]
        return o.transpose(1, 2).flatten(2)


class RegionHead(nn.Module):
    """Region head: RoI features of each view, translated through the other view's context.

    Args:
        channels: C of the local-branch map.
        context_length: L_c (odd); ignored when ``use_context`` is False.
        num_layers: decoder layers (3 in the paper).
        num_units: decoder units per layer (3 in the paper).
        width: decoder width (128 in the paper).
        use_context: False gives the ``region`` ablation: z = MLP(h), no decoder.
    """

    def __init__(self, channels: int, context_length: int = 5, num_layers: int = 3,
                 num_units: int = 3, width: int = 128, use_context: bool = True) -> None:
        super().__init__()
        if use_context:
            check_context_length(context_length)
        self.context_length, self.use_context = context_length, use_context
        hidden = num_units * width
        if use_context:
            self.pos_code = PositionalCode()
            memory_dim = channels + self.pos_code.out_dim
            dims = [channels] + [hidden] * (num_layers - 1)
            self.layers = nn.ModuleList(
                DecoderLayer(d, memory_dim, num_units, width) for d in dims)
            self.proj = nn.Linear(hidden, channels)
        else:
            self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(),
                                     nn.Linear(hidden, channels))

    def context_tokens(self, fmap: torch.Tensor) -> torch.Tensor:
        """(B, C, T', H', W') normalised map -> (B, L_c * H' * W', C + 16) context tokens."""
        batch, channels, t, h, w = fmap.shape
        frames = fmap[:, :, context_indices(t, self.context_length)]
        tokens = frames.flatten(2).transpose(1, 2)  # (B, L*H*W, C) in (t, y, x) order
        code = self.pos_code(self.context_length, h, w, fmap.device).to(tokens.dtype)
        return torch.cat([tokens, code.expand(batch, -1, -1)], dim=2)

    def translate(self, queries: torch.Tensor, memory: torch.Tensor,
                  entropies: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Queries (B, K, C) through the decoder on memory (B, N, C + 16) -> (B, K, C); with a
        list ``entropies``, each layer appends its relative attention entropy (B, U, K)."""
        x = queries
        for layer in self.layers:
            x = layer(x, memory, entropies)
        return self.proj(x)

    def translate_with_attention(self, queries: torch.Tensor, memory: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`translate` plus every layer's attention weights (opt-in, for ``viz``).

        Returns z (B, K, C), identical to :meth:`translate`, and the weights
        (num_layers, B, U, K, N) of :meth:`DecoderLayer.attention`, layer by layer.
        """
        x, weights = queries, []
        for layer in self.layers:
            weights.append(layer.attention(x, memory))
            x = layer(x, memory)
        return self.proj(x), torch.stack(weights)

    def attention_entropy(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Relative entropy of the decoder's attention, a statistic (no gradient).

        queries (B, K, C), memory (B, N, C + 16) -> (B, K): for every query, the entropy
        ``-sum_n p_n log p_n`` of each layer's and unit's attention over the N context tokens,
        divided by ``log N`` and averaged over layers and units. 1.0 is uniform attention (the
        context is the other view's mean); 0.0 is attention on a single token.
        """
        entropies: list[torch.Tensor] = []
        with torch.no_grad():
            self.translate(queries.detach(), memory.detach(), entropies)
        return _mean_entropy(entropies)

    def forward(self, fmap_a: torch.Tensor, fmap_b: torch.Tensor, boxes_a: torch.Tensor,
                boxes_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """fmap_*: (B, C, T', H', W') local maps; boxes_*: (B, K, 4) normalised key-frame boxes.

        Returns h_a, h_b (targets) and z_a2b, z_b2a (translations), each (B, K, C); with
        context also ``attn_entropy_a2b`` / ``attn_entropy_b2a`` (B, K), the decoder's relative
        attention entropy per query (:meth:`attention_entropy`; computed from the forward's own
        queries and keys, statistics without gradient).
        """
        fa, fb = F.normalize(fmap_a, dim=1), F.normalize(fmap_b, dim=1)
        key = fa.shape[2] // 2
        h_a = roi_features(fa[:, :, key], boxes_a)
        h_b = roi_features(fb[:, :, key], boxes_b)
        if not self.use_context:
            return {"h_a": h_a, "h_b": h_b, "z_a2b": self.mlp(h_a), "z_b2a": self.mlp(h_b)}
        ent_a2b: list[torch.Tensor] = []
        ent_b2a: list[torch.Tensor] = []
        z_a2b = self.translate(h_a, self.context_tokens(fb), ent_a2b)
        z_b2a = self.translate(h_b, self.context_tokens(fa), ent_b2a)
        return {"h_a": h_a, "h_b": h_b, "z_a2b": z_a2b, "z_b2a": z_b2a,
                "attn_entropy_a2b": _mean_entropy(ent_a2b),
                "attn_entropy_b2a": _mean_entropy(ent_b2a)}


def _mean_entropy(entropies: list[torch.Tensor]) -> torch.Tensor:
    """Per-layer (B, U, K) relative entropies -> (B, K): the mean over layers and units."""
    return torch.stack(entropies).mean(dim=(0, 2))
