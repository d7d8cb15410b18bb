"""Export a trained model's backbone to ``backbone.safetensors`` (``constcl.backbone_file``).

Keys: ``trunk.*`` (stem to res4), ``res5_global.*`` (res5 copy 1, feeding the global head) and,
for the Y shape, ``res5_local.*`` (copy 2, feeding the region head). Metadata holds the backbone
name, variant, local source, input normalisation, convolution padding (``models.r3d.PADDINGS``;
``eval.encoder.load_backbone`` builds the network with it) and the whole config as JSON.
"""

from __future__ import annotations

from pathlib import Path

import torch

from constcl import backbone_file
from constcl.models import ConSTCL


def backbone_tensors(model: ConSTCL) -> dict[str, torch.Tensor]:
    """The file's tensors of ``model`` (detached, CPU, contiguous)."""
    local = model.res5_local.state_dict() if model.res5_local is not None else None
    return backbone_file.pack(model.backbone.state_dict(), local)


def export_backbone(model: ConSTCL, path: str | Path, config: dict) -> Path:
    """Write the backbone tensors atomically (temporary file, then rename)."""
    return backbone_file.write(path, backbone_tensors(model),
                               backbone_file.BackboneMeta.from_config(config))
