"""Convert a TF Model Garden CVRL checkpoint into constcl's ``backbone.safetensors``.

The published CVRL weights (``official/projects/video_ssl``, R3D-50 "1x") were trained by the
Model Garden's ``ResNet3D`` backbone (``official/vision/modeling/backbones/resnet_3d.py``) in
the configuration of ``configs/experiments/cvrl_pretrain_k600_200ep.yaml``: stem conv
5 x 7 x 7 with stride (2, 2, 2), stem max-pool 1 x 3 x 3 with stride (1, 2, 2), temporal kernels
1, 1, 3, 3 per stage, all temporal strides 1, no self-gating. That is constcl's R3D layout
(``constcl.models.r3d``); what differs, and how the conversion keeps the features equal:

- **Names**: object-based checkpoint keys (``backbone/layer_with_weights-N/...``), mapped by
  :data:`NAME_TABLE` below. The backbone sits under ``backbone/`` (the trainer checkpoints
  ``model.checkpoint_items``) or under ``model/layer_with_weights-0/``; the projection head
  (``model/layer_with_weights-K``, K >= 1), the optimizer's slots and the step counters are
  recognised and left out (the head is not part of a backbone export). Any other variable, and
  any missing one, stops the conversion with its name.
- **Layout**: TF kernels are (kT, kH, kW, C_in, C_out), PyTorch's (C_out, C_in, kT, kH, kW);
  activations are channels-last in TF. The channel order of the input (RGB) is the same.
- **Padding**: TF ``padding='same'`` pads strided convs and pools asymmetrically; the export
  records ``padding=tf_same`` and every loader builds the network with it (``R3D(padding=)``).
- **Input range**: the Model Garden feeds [0, 1] clips (``zero_centering_image=False``);
  constcl's clips are [-1, 1]. The export records ``input_norm=unit``, which maps one to the
  other before the stem.
- **BatchNorm epsilon** is not stored in a checkpoint. The CVRL experiments use 1e-5 (their
  ``norm_activation`` config; the ``ResNet3D`` class default is 1e-3). PyTorch's BatchNorm uses
  1e-5, so the stored moving variance is shifted by ``bn_epsilon - 1e-5``, which leaves
  ``var + eps`` (all that inference uses) unchanged.
- **res5**: both res5 copies of the export (``res5_global``, ``res5_local``) get the
  checkpoint's res5.

The checkpoint does not store strides either: the converter checks the architecture it can see
(stem kernel, widths, depths, temporal kernels, shortcuts) against ``constcl.models.BACKBONES`` and
assumes the CVRL strides above.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from constcl import backbone_file
from constcl.convert.tf_bundle import TensorBundle, checkpoints_in, find_checkpoint, is_archive
from constcl.errors import ConstclError
from constcl.models.r3d import BACKBONES, STAGE_NAMES, R3DSpec, build_backbone

__all__ = ["NAME_TABLE", "ConvertSettings", "convert_cvrl", "map_variables"]

_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_TORCH_BN_EPS = 1e-5  # nn.BatchNorm3d's default, which constcl's R3D uses

# ---------------------------------------------------------------------------- the name table
# TF Model Garden ResNet3D variable (relative to the backbone object)   ->  constcl parameter.
# Keras numbers the functional model's layers that own weights in creation order: the stem conv
# (0), the stem BatchNorm (1), then one BottleneckBlock3D per block (2, 3, ...), stage by stage
# (res2 blocks first). "{block}" below is the constcl block, e.g. "res3.1" for the second block
# of res3; "{layer}" is "layer_with_weights-N".
NAME_TABLE: tuple[tuple[str, str], ...] = (
    # stem
    ("layer_with_weights-0/kernel", "stem.0.weight"),
    ("layer_with_weights-1/gamma", "stem.1.weight"),
    ("layer_with_weights-1/beta", "stem.1.bias"),
    ("layer_with_weights-1/moving_mean", "stem.1.running_mean"),
    ("layer_with_weights-1/moving_variance", "stem.1.running_var"),
    # every bottleneck block
    ("{layer}/_temporal_conv/kernel", "{block}.conv1.weight"),  # tk x 1 x 1
    ("{layer}/_norm1/gamma", "{block}.bn1.weight"),
    ("{layer}/_norm1/beta", "{block}.bn1.bias"),
    ("{layer}/_norm1/moving_mean", "{block}.bn1.running_mean"),
    ("{layer}/_norm1/moving_variance", "{block}.bn1.running_var"),
    ("{layer}/_spatial_conv/kernel", "{block}.conv2.weight"),  # 1 x 3 x 3, spatial stride
    ("{layer}/_norm2/gamma", "{block}.bn2.weight"),
    ("{layer}/_norm2/beta", "{block}.bn2.bias"),
    ("{layer}/_norm2/moving_mean", "{block}.bn2.running_mean"),
    ("{layer}/_norm2/moving_variance", "{block}.bn2.running_var"),
    ("{layer}/_expand_conv/kernel", "{block}.conv3.weight"),  # 1 x 1 x 1, 4 x width
    ("{layer}/_norm3/gamma", "{block}.bn3.weight"),
    ("{layer}/_norm3/beta", "{block}.bn3.bias"),
    ("{layer}/_norm3/moving_mean", "{block}.bn3.running_mean"),
    ("{layer}/_norm3/moving_variance", "{block}.bn3.running_var"),
    # projection shortcut (first block of a stage)
    ("{layer}/_shortcut_conv/kernel", "{block}.shortcut.0.weight"),
    ("{layer}/_norm0/gamma", "{block}.shortcut.1.weight"),
    ("{layer}/_norm0/beta", "{block}.shortcut.1.bias"),
    ("{layer}/_norm0/moving_mean", "{block}.shortcut.1.running_mean"),
    ("{layer}/_norm0/moving_variance", "{block}.shortcut.1.running_var"),
)
# Checkpoint entries that are not weights of the network: TF's bookkeeping and the optimizer.
_IGNORED = re.compile(r"^(_CHECKPOINTABLE_OBJECT_GRAPH|save_counter|global_step|optimizer/.*|"
                      r".*/\.OPTIMIZER_SLOT/.*)$")
_BLOCK_KEY = re.compile(r"^(?P<prefix>.*?)layer_with_weights-(?P<n>\d+)/_temporal_conv/kernel$")


@dataclass(frozen=True)
class ConvertSettings:
    """What ``constcl convert tf`` needs.

    checkpoint: the ``ckpt-N`` prefix, its ``.index`` / ``.data-*`` file, the folder holding
    it or a ``.tar.gz`` of that folder. out: the ``.safetensors`` to write. bn_epsilon: the
    BatchNorm epsilon the TF model was built with (CVRL: 1e-5; ``ResNet3D``'s default 1e-3).
    verify_checksums: check each tensor's crc32c while reading.
    """

    checkpoint: str | Path
    out: str | Path
    bn_epsilon: float = 1e-5
    verify_checksums: bool = True


@dataclass
class MappedCheckpoint:
    """The result of :func:`map_variables`: constcl state dict of the whole backbone (res5
    included), its family member name, and what was left out."""

    backbone: str
    state: dict[str, torch.Tensor]
    source_names: dict[str, str]  # constcl name -> TF name
    head_variables: list[str] = field(default_factory=list)
    ignored_variables: list[str] = field(default_factory=list)


def _strip(name: str) -> str:
    return name[: -len(_SUFFIX)] if name.endswith(_SUFFIX) else name


def _backbone_prefix(names: Iterable[str], where: Path) -> str:
    """The path of the backbone object in the checkpoint (e.g. ``backbone/``)."""
    prefixes = {m.group("prefix") for n in names if (m := _BLOCK_KEY.match(n))}
    if len(prefixes) != 1:
        raise ConstclError(f"{where}: cannot find one R3D backbone in the checkpoint (block "
                           f"variables under {sorted(prefixes) or 'no prefix'}); expected a TF "
                           "Model Garden ResNet3D, e.g. backbone/layer_with_weights-2/"
                           "_temporal_conv/kernel")
    return prefixes.pop()


def _infer_spec(layers: dict[int, dict[str, tuple[int, ...]]], stem: tuple[int, ...],
                where: Path) -> tuple[list[tuple[int, int]], R3DSpec]:
    """Stages from the block layers' shapes: [(first layer, depth)] and the R3DSpec seen."""
    if len(stem) != 5 or stem[:3] != (5, 7, 7) or stem[3] != 3:
        raise ConstclError(f"{where}: stem kernel has shape {stem}; constcl's R3D needs "
                           "(5, 7, 7, 3, C) (the CVRL stem)")
    blocks = sorted(layers)
    if blocks != list(range(2, 2 + len(blocks))):
        raise ConstclError(f"{where}: backbone layers are not numbered 2..N: {blocks}")
    stages: list[tuple[int, int, int, int]] = []  # first layer, depth, width, temporal kernel
    for n in blocks:
        shape = layers[n].get("_temporal_conv/kernel")
        if shape is None:
            raise ConstclError(f"{where}: layer_with_weights-{n} has no _temporal_conv/kernel")
        width, tk = shape[4], shape[0]
        if stages and stages[-1][2] == width:
            first, depth, _, stage_tk = stages[-1]
            if stage_tk != tk:
                raise ConstclError(f"{where}: layer_with_weights-{n} has temporal kernel {tk}, "
                                   f"the rest of its stage {stage_tk}; constcl's R3D has one "
                                   "temporal kernel per stage")
            stages[-1] = (first, depth + 1, width, tk)
        else:
            stages.append((n, 1, width, tk))
    if len(stages) != len(STAGE_NAMES):
        raise ConstclError(f"{where}: found {len(stages)} stages (block widths "
                           f"{[s[2] for s in stages]}); constcl's R3D has 4")
    spec = R3DSpec(depths=tuple(s[1] for s in stages),  # type: ignore[arg-type]
                   widths=tuple(s[2] for s in stages),  # type: ignore[arg-type]
                   temporal_kernels=tuple(s[3] for s in stages),  # type: ignore[arg-type]
                   stem_width=stem[4])
    return [(s[0], s[1]) for s in stages], spec


def _tf_to_torch(value: np.ndarray, constcl_name: str, bn_epsilon: float,
                 tf_name: str) -> torch.Tensor:
    """One tensor in constcl's layout: conv kernels transposed, BN variance shifted."""
    if value.ndim == 5:  # (kT, kH, kW, C_in, C_out) -> (C_out, C_in, kT, kH, kW)
        value = value.transpose(4, 3, 0, 1, 2)
    elif constcl_name.endswith("running_var") and bn_epsilon != _TORCH_BN_EPS:
        value = value.astype(np.float64) + (bn_epsilon - _TORCH_BN_EPS)
        if (value <= 0).any():
            raise ConstclError(f"{tf_name}: moving variance + {bn_epsilon} - {_TORCH_BN_EPS} is "
                               "not positive; cannot express this epsilon in PyTorch's BatchNorm")
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))


def _split_names(names: Iterable[str], where: Path
                 ) -> tuple[str, list[str], list[str], list[str]]:
    """(backbone prefix, backbone variables, head variables, ignored variables); ConstclError
    naming the variables that are none of these."""
    prefix = _backbone_prefix(names, where)
    ignored = sorted(n for n in names if _IGNORED.match(n))
    backbone = [n for n in names if n.startswith(prefix) and n not in ignored
                and re.match(r"layer_with_weights-\d+/", n[len(prefix):])]
    head_root = "model/" if prefix in ("backbone/", "model/layer_with_weights-0/") else None
    head = sorted(n for n in names if head_root and n.startswith(head_root)
                  and n not in backbone and n not in ignored and not n.startswith(prefix))
    unknown = sorted(set(names) - set(backbone) - set(head) - set(ignored))
    if unknown:
        raise ConstclError(f"{where}: variables that are not part of a CVRL R3D checkpoint: "
                           f"{unknown[:10]}" + (f" and {len(unknown) - 10} more"
                                                if len(unknown) > 10 else ""))
    return prefix, backbone, head, ignored


def _expand_table(stages: list[tuple[int, int]]) -> dict[str, str]:
    """:data:`NAME_TABLE` for these stages ([(first layer, depth)]): TF name relative to the
    backbone -> constcl name."""
    table: dict[str, str] = {}
    for tf_pattern, pt_pattern in NAME_TABLE:
        if "{layer}" not in tf_pattern:
            table[tf_pattern] = pt_pattern
            continue
        for stage, (first, depth) in zip(STAGE_NAMES, stages, strict=True):
            for b in range(depth):
                layer = f"layer_with_weights-{first + b}"
                table[tf_pattern.format(layer=layer)] = pt_pattern.format(block=f"{stage}.{b}")
    return table


def map_variables(bundle: TensorBundle, bn_epsilon: float = 1e-5) -> MappedCheckpoint:
    """Read the backbone of a Model Garden R3D checkpoint in constcl's names and layout.

    Raises ConstclError naming every unknown variable (neither backbone, head nor optimizer /
    bookkeeping), every backbone variable the table cannot place and every constcl parameter
    the checkpoint lacks; and when the architecture matches no ``BACKBONES`` member.
    """
    where = bundle.prefix
    names = {_strip(n): n for n in bundle.entries}
    prefix, backbone_names, head, ignored = _split_names(names, where)
    layers: dict[int, dict[str, tuple[int, ...]]] = {}
    for n in backbone_names:
        layer, _, rest = n[len(prefix):].partition("/")
        index = int(layer.rsplit("-", 1)[1])
        layers.setdefault(index, {})[rest] = bundle.entries[names[n]].shape
    stem = layers.pop(0, {}).get("kernel", ())
    layers.pop(1, None)
    stages, spec = _infer_spec(layers, stem, where)
    matches = [k for k, v in BACKBONES.items() if v == spec]
    if not matches:
        raise ConstclError(f"{where}: the checkpoint's network (depths {spec.depths}, widths "
                           f"{spec.widths}, temporal kernels {spec.temporal_kernels}, stem "
                           f"{spec.stem_width}) is no constcl backbone; known: {sorted(BACKBONES)}")
    name = matches[0]

    table = _expand_table(stages)
    reference = build_backbone(name).state_dict()
    state: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    unplaced = []
    for n in sorted(backbone_names):
        rel = n[len(prefix):]
        if rel not in table:
            unplaced.append(n)
            continue
        target = table[rel]
        value = _tf_to_torch(bundle.read(names[n]), target, bn_epsilon, n)
        if target not in reference or tuple(reference[target].shape) != tuple(value.shape):
            want = tuple(reference[target].shape) if target in reference else "no such parameter"
            raise ConstclError(f"{where}: {n} -> {target}: shape {tuple(value.shape)}, constcl "
                               f"{name} expects {want}")
        state[target] = value
        source[target] = n
    if unplaced:
        raise ConstclError(f"{where}: backbone variables with no place in constcl's R3D: "
                           f"{unplaced[:10]}")
    for key, value in reference.items():  # BatchNorm's counters are not weights
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros_like(value)
    missing = sorted(set(reference) - set(state))
    if missing:
        raise ConstclError(f"{where}: constcl {name} parameters the checkpoint does not provide: "
                           f"{missing[:10]}" + (f" and {len(missing) - 10} more"
                                                if len(missing) > 10 else ""))
    return MappedCheckpoint(backbone=name, state=state, source_names=source,
                            head_variables=head, ignored_variables=ignored)


def export_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Backbone state dict -> the tensors of a backbone file (``constcl.backbone_file``):
    ``trunk.*``, ``res5_global.*`` and ``res5_local.*`` (both copies from the one res5)."""
    res5 = {k[len("res5."):]: v.clone() for k, v in state.items() if k.startswith("res5.")}
    return backbone_file.pack(state, res5)


def convert_cvrl(settings: ConvertSettings) -> dict[str, object]:
    """Convert ``settings.checkpoint`` and write ``settings.out``; returns a summary (backbone,
    tensor counts, what was left out). The file's metadata holds the backbone name,
    ``padding=tf_same``, ``input_norm=unit``, ``variant=cvrl``, ``local_source=y`` and a
    ``conversion`` JSON record (source, epsilon, skipped head variables)."""
    if settings.bn_epsilon <= 0:
        raise ValueError(f"bn_epsilon must be positive; got {settings.bn_epsilon}")
    out = Path(settings.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"output {str(out)!r} must end in .safetensors")
    source = Path(settings.checkpoint)
    with tempfile.TemporaryDirectory(prefix="constcl-tf-") as unpacked:  # for a .tar.gz
        prefix = find_checkpoint(source, workdir=unpacked)
        searched = Path(unpacked) if source.is_file() and is_archive(source) else source
        found = checkpoints_in(searched) if searched.is_dir() else [prefix]
        bundle = TensorBundle(prefix, verify=settings.verify_checksums)
        mapped = map_variables(bundle, settings.bn_epsilon)
    record = {
        "source": str(settings.checkpoint), "checkpoint_name": prefix.name,
        "converter": "constcl.convert.cvrl", "bn_epsilon": settings.bn_epsilon,
        "torch_bn_epsilon": _TORCH_BN_EPS, "tf_input_range": [0.0, 1.0],
        "assumed_strides": "stem conv (2,2,2), stem pool (1,2,2), blocks temporal 1 (CVRL)",
        "converted_variables": len(mapped.source_names),
        "head_variables_skipped": mapped.head_variables,
        "ignored_variables": mapped.ignored_variables,
        "settings": {k: str(v) for k, v in asdict(settings).items()},
    }
    config = {"model": {"backbone": mapped.backbone, "variant": "cvrl", "local_source": "y",
                        "input_norm": "unit", "padding": "tf_same"}}
    meta = backbone_file.BackboneMeta.from_config(config, conversion=json.dumps(record))
    backbone_file.write(out, export_tensors(mapped.state), meta)
    return {"out": str(out), "backbone": mapped.backbone,
            "converted": len(mapped.source_names), "head_skipped": len(mapped.head_variables),
            "ignored": len(mapped.ignored_variables), "checkpoint_name": prefix.name,
            "candidates": [p.name for p in found]}
