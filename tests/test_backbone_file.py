"""``constcl.backbone_file``: the one module that writes, reads and checks backbone files."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from constcl import backbone_file as bf
from constcl.errors import ConstclError, NonFiniteError, new_file_mode
from constcl.models.r3d import build_backbone

CONFIG = {"model": {"backbone": "r3d_tiny", "variant": "constcl", "local_source": "y",
                    "input_norm": "clip", "padding": "torch"}}


def raw_metadata(path):
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_pack_names_every_tensor_by_part_and_unpack_inverts_it():
    net = build_backbone("r3d_tiny")
    local = {"0.conv1.weight": torch.ones(2, 2)}
    tensors = bf.pack(net.state_dict(), local)
    state = net.state_dict()
    want = {("res5_global." + k[5:]) if k.startswith("res5.") else "trunk." + k for k in state}
    assert set(tensors) == want | {"res5_local.0.conv1.weight"}
    parts = bf.unpack({**tensors, "head.w": torch.zeros(1)})
    assert parts.other == ["head.w"] and parts.res5_local.keys() == local.keys()
    rebuilt = parts.r3d_state(parts.res5_global)
    assert rebuilt.keys() == state.keys()
    assert all(torch.equal(rebuilt[k], v) for k, v in state.items())


def test_write_then_read_round_trips_tensors_and_metadata(tmp_path):
    tensors = {"trunk.a": torch.arange(6.0).reshape(2, 3), "res5_global.b": torch.ones(2)}
    meta = bf.BackboneMeta.from_config(CONFIG, conversion='{"x": 1}')
    path = bf.write(tmp_path / "sub" / "backbone.safetensors", tensors, meta)
    assert raw_metadata(path) == {"backbone": "r3d_tiny", "variant": "constcl",
                                  "local_source": "y", "input_norm": "clip", "padding": "torch",
                                  "config": json.dumps(CONFIG), "format": bf.FORMAT,
                                  "conversion": '{"x": 1}'}
    read_meta, read_tensors = bf.read(path)
    assert read_meta == meta == bf.read_meta(path)
    assert read_tensors.keys() == tensors.keys()
    assert all(torch.equal(read_tensors[k], v) for k, v in tensors.items())
    assert stat.S_IMODE(os.stat(path).st_mode) == new_file_mode()
    assert [p.name for p in path.parent.iterdir()] == ["backbone.safetensors"]  # no temporary


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path, monkeypatch):
    def refuse(path, mode):
        assert os.path.exists(path)  # the temporary was written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bf.os, "chmod", refuse)
    with pytest.raises(OSError, match="b.safetensors"):
        bf.write(tmp_path / "b.safetensors", {"trunk.a": torch.zeros(2)}, bf.BackboneMeta())
    assert list(tmp_path.iterdir()) == []


def test_files_without_the_later_fields_read_with_their_defaults(tmp_path):
    path = tmp_path / "old.safetensors"
    save_file({"trunk.a": torch.zeros(1)}, str(path), metadata={"backbone": "r3d_tiny"})
    meta = bf.read_meta(path)
    assert (meta.input_norm, meta.padding, meta.variant) == ("none", "torch", None)
    bf.check_compatible(meta, "x", backbone="r3d_tiny", input_norm="none", padding="torch")


@pytest.mark.parametrize("field, value", [("input_norm", "bogus"), ("padding", "valid")])
def test_unknown_normalisation_or_padding_is_refused(tmp_path, field, value):
    path = tmp_path / "b.safetensors"
    save_file({"trunk.a": torch.zeros(1)}, str(path), metadata={field: value})
    with pytest.raises(ValueError, match=f"{field}={value!r} is unknown"):
        bf.read_meta(path)


def test_missing_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.init_from='x' does not exist"):
        bf.read_meta(tmp_path / "nope.safetensors", "model.init_from='x'")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(os.urandom(64))
    with pytest.raises(ConstclError, match=r"bad.safetensors' is not a readable safetensors"):
        bf.read(bad)


def test_check_compatible_names_field_file_and_value_to_set():
    meta = bf.BackboneMeta(backbone="r3d_tiny", input_norm="unit", padding="tf_same")
    bf.check_compatible(meta, "f", backbone="r3d_tiny", input_norm="unit", padding="tf_same")
    bf.check_compatible(meta, "f")  # nothing asked: anything fits
    with pytest.raises(bf.BackboneMismatch) as err:
        bf.check_compatible(meta, "model.init_from='w'", input_norm="unit", padding="torch",
                            prefix="model.")
    assert str(err.value) == ("model.init_from='w' was made with model.padding='tf_same', not "
                              "model.padding='torch'; set model.padding=tf_same")
    with pytest.raises(ValueError, match="backbone='r3d_tiny', not backbone='r3d50'; set "
                                         "backbone=r3d_tiny or leave it unset"):
        bf.check_compatible(meta, "f", backbone="r3d50", optional=True)


def test_check_finite_names_the_bad_tensors():
    bf.check_finite({"a": torch.ones(2), "n": torch.tensor([1, 2])}, "f")
    with pytest.raises(NonFiniteError, match=r"f: 2 tensor\(s\) hold NaN or inf \(b, c\)"):
        bf.check_finite({"a": torch.ones(2), "b": torch.tensor([float("nan")]),
                         "c": torch.tensor([float("inf")])}, "f")


def test_every_reader_refuses_a_file_made_for_another_network(tmp_path):
    """init_from (the config's names) and the evaluation loader (its arguments' names) both
    ask :func:`check_compatible`."""
    from constcl.engine.init_from import check_init_from
    from constcl.eval.encoder import load_backbone

    net = build_backbone("r3d_tiny")
    meta = bf.BackboneMeta.from_config({"model": {**CONFIG["model"], "input_norm": "unit",
                                                  "padding": "tf_same"}})
    path = bf.write(tmp_path / "b.safetensors", bf.pack(net.state_dict()), meta)
    assert check_init_from(path, "r3d_tiny", "unit", "tf_same")["padding"] == "tf_same"
    with pytest.raises(ConstclError, match="set model.input_norm=unit$"):
        check_init_from(path, "r3d_tiny", "clip", "tf_same")
    with pytest.raises(ValueError, match="backbone='r3d_tiny', not backbone='r3d_small'"):
        load_backbone(path, "global", backbone="r3d_small")
    loaded = load_backbone(path, "global")
    assert (loaded.input_norm, loaded.padding) == ("unit", "tf_same")
