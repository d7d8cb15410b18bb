"""Export a trained model's backbone to ``backbone.safetensors`` with clear names.

Keys: ``trunk.*`` (stem to res4), ``res5_global.*`` (res5 copy 1, feeding the global head) and,
for the Y shape, ``res5_local.*`` (copy 2, feeding the region head). Metadata holds the backbone
name, variant, local source, input normalisation, convolution padding (``models.r3d.PADDINGS``;
``eval.encoder.load_backbone`` builds the network with it) and the whole config as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from constcl.errors import new_file_mode, writing
from constcl.models import ConSTCL


def backbone_tensors(model: ConSTCL) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, value in model.backbone.state_dict().items():
        key = f"res5_global.{name[5:]}" if name.startswith("res5.") else f"trunk.{name}"
        tensors[key] = value
    if model.res5_local is not None:
        for name, value in model.res5_local.state_dict().items():
            tensors[f"res5_local.{name}"] = value
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def export_backbone(model: ConSTCL, path: str | Path, config: dict) -> Path:
    """Write the backbone tensors atomically (temporary file, then rename)."""
    path = Path(path)
    meta = {"backbone": config["model"]["backbone"], "variant": config["model"]["variant"],
            "local_source": config["model"]["local_source"],
            "input_norm": config["model"].get("input_norm", "none"),
            "padding": config["model"].get("padding", "torch"), "config": json.dumps(config),
            "format": "constcl-backbone-v1"}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with writing(path):  # a full disk or size limit names the file
            save_file(backbone_tensors(model), str(tmp), metadata=meta)
            os.chmod(tmp, new_file_mode())  # save_file creates it 0600; weights are shared
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path
