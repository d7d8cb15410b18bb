"""The converter against features computed by the official TensorFlow code.

``tests/fixtures/tf`` was made by ``bench/make_tf_fixture.py`` with TensorFlow and
tf-models-official (versions in ``fixture.json``): a Model Garden CVRL model (``r3d_tf_tiny``
size, random weights, random BatchNorm statistics, BN epsilon 1e-3) saved as the trainer saves
it, and the backbone's endpoints for a fixed input. No TensorFlow is needed here.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from constcl.cli import main
from constcl.convert import ConvertSettings, TensorBundle, convert_cvrl, find_checkpoint
from constcl.convert.cvrl import map_variables
from constcl.errors import ConstclError
from constcl.eval.encoder import load_backbone
from constcl.models.r3d import build_backbone

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tf"
META = json.loads((FIXTURE / "fixture.json").read_text())
TOLERANCE = 1e-4  # float32; measured 1.2e-6 on res5 (values up to 3.2)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cvrl") / "backbone.safetensors"
    convert_cvrl(ConvertSettings(checkpoint=FIXTURE / "ckpt-1", out=out,
                                 bn_epsilon=META["bn_epsilon"]))
    return out


def _features(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """constcl features of the fixture's input (TF's [0, 1] clip as constcl's [-1, 1] clip)."""
    data = np.load(FIXTURE / "expected.npz")
    clip = torch.from_numpy(data["input"]).permute(0, 4, 1, 2, 3) * 2.0 - 1.0
    with torch.no_grad():
        return net.forward_features(clip)


def _max_errors(feats: dict[str, torch.Tensor]) -> dict[str, float]:
    data = np.load(FIXTURE / "expected.npz")
    errors = {}
    for name in ("res2", "res3", "res4", "res5"):
        expected = torch.from_numpy(data[name]).permute(0, 4, 1, 2, 3)  # TF is channels-last
        assert feats[name].shape == expected.shape, name
        errors[name] = (feats[name] - expected).abs().max().item()
    return errors


@pytest.mark.parametrize("branch", ["global", "local"])
def test_converted_features_match_tensorflow(converted: Path, branch: str) -> None:
    net = load_backbone(converted, branch=branch)
    assert net.padding == "tf_same" and net.input_norm == "unit"
    errors = _max_errors(_features(net))
    print(f"max abs error vs TF ({branch}): {errors}")
    assert max(errors.values()) < TOLERANCE, errors


def test_symmetric_padding_would_not_match(converted: Path) -> None:
    """The fixture is sensitive to the padding convention (even sizes, strided convs)."""
    tf_net = load_backbone(converted)
    torch_net = build_backbone("r3d_tf_tiny", input_norm="unit", padding="torch").eval()
    torch_net.load_state_dict(tf_net.state_dict())
    assert max(_max_errors(_features(torch_net)).values()) > 0.1


def test_export_layout_and_metadata(converted: Path) -> None:
    with safe_open(str(converted), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
        same = torch.equal(f.get_tensor("res5_global.0.conv1.weight"),
                           f.get_tensor("res5_local.0.conv1.weight"))
    assert meta["backbone"] == "r3d_tf_tiny" and meta["padding"] == "tf_same"
    assert meta["input_norm"] == "unit" and meta["format"] == "constcl-backbone-v1"
    record = json.loads(meta["conversion"])
    assert record["bn_epsilon"] == META["bn_epsilon"] and record["converted_variables"] == 145
    assert len(record["head_variables_skipped"]) == 20
    assert {k.split(".")[0] for k in keys} == {"trunk", "res5_global", "res5_local"}
    assert same


def test_reader_without_tensorflow() -> None:
    bundle = TensorBundle(FIXTURE / "ckpt-1")
    assert bundle.num_shards == 1
    entry = bundle.entries["backbone/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    assert entry.shape == (5, 7, 7, 3, 64) and entry.dtype_name == "float32"
    assert bundle.read("global_step/.ATTRIBUTES/VARIABLE_VALUE") == 1
    with pytest.raises(ConstclError, match="string"):
        bundle.read("_CHECKPOINTABLE_OBJECT_GRAPH")


def _copy_fixture(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, folder)
    return folder


def test_corrupt_data_is_detected(tmp_path: Path) -> None:
    folder = _copy_fixture(tmp_path)
    bundle = TensorBundle(folder / "ckpt-1")
    name = "backbone/layer_with_weights-2/_spatial_conv/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    shard = folder / "ckpt-1.data-00000-of-00001"
    data = bytearray(shard.read_bytes())
    data[bundle.entries[name].offset + 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ConstclError, match="_spatial_conv"):
        TensorBundle(folder / "ckpt-1").read(name)


def test_compressed_index_block_is_refused(tmp_path: Path) -> None:
    """Snappy blocks are not supported: a clear error, not garbage."""
    from constcl.convert.tf_bundle import _varint

    folder = _copy_fixture(tmp_path)
    index = folder / "ckpt-1.index"
    data = bytearray(index.read_bytes())
    footer = bytes(data[-48:])
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)
    offset, pos = _varint(footer, pos)
    size, _ = _varint(footer, pos)
    data[offset + size] = 1  # the block trailer's compression type
    index.write_bytes(bytes(data))
    with pytest.raises(ConstclError, match="snappy"):
        TensorBundle(folder / "ckpt-1")


class _Edited:
    """A bundle with entries added or removed (the mapping's error paths)."""

    def __init__(self, add: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> None:
        self._inner = TensorBundle(FIXTURE / "ckpt-1")
        self.prefix = self._inner.prefix
        self.entries = {k: v for k, v in self._inner.entries.items() if k not in drop}
        for name in add:
            self.entries[name] = next(iter(self._inner.entries.values()))

    def read(self, name: str) -> np.ndarray:
        return self._inner.read(name)


def test_unknown_variable_stops_the_conversion() -> None:
    name = "ema/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    with pytest.raises(ConstclError, match="ema/layer_with_weights-0/kernel"):
        map_variables(_Edited(add=(name,)), 1e-3)  # type: ignore[arg-type]


def test_missing_variable_stops_the_conversion() -> None:
    name = "backbone/layer_with_weights-4/_norm0/gamma/.ATTRIBUTES/VARIABLE_VALUE"
    with pytest.raises(ConstclError, match=r"res3\.0\.shortcut\.1\.weight"):
        map_variables(_Edited(drop=(name,)), 1e-3)  # type: ignore[arg-type]


def test_optimizer_slots_are_ignored() -> None:
    slot = ("backbone/layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/momentum/"
            ".ATTRIBUTES/VARIABLE_VALUE")
    mapped = map_variables(_Edited(add=(slot, "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE")),
                           1e-3)  # type: ignore[arg-type]
    assert len(mapped.ignored_variables) == 4


def test_bn_epsilon_is_folded_into_the_variance() -> None:
    bundle = TensorBundle(FIXTURE / "ckpt-1")
    var = bundle.read("backbone/layer_with_weights-1/moving_variance/.ATTRIBUTES/VARIABLE_VALUE")
    mapped = map_variables(bundle, 1e-3)
    folded = mapped.state["stem.1.running_var"].numpy()
    np.testing.assert_allclose(folded + 1e-5, var + 1e-3, rtol=1e-6)


def test_checkpoint_locations(tmp_path: Path) -> None:
    prefix = FIXTURE / "ckpt-1"
    assert find_checkpoint(prefix) == prefix
    assert find_checkpoint(FIXTURE / "ckpt-1.index") == prefix
    assert find_checkpoint(FIXTURE / "ckpt-1.data-00000-of-00001") == prefix
    assert find_checkpoint(FIXTURE) == prefix
    archive = tmp_path / "cvrl.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(FIXTURE, arcname="r3d_tiny")
    unpacked = find_checkpoint(archive, workdir=tmp_path / "unpacked")
    assert unpacked == tmp_path / "unpacked" / "r3d_tiny" / "ckpt-1"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_checkpoint(tmp_path / "nothing")


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "cvrl" / "backbone.safetensors"
    assert main(["convert", "tf", str(FIXTURE), str(out), "--bn-epsilon", "1e-3"]) == 0
    assert "r3d_tf_tiny backbone from ckpt-1, 145 TF variables converted" in capsys.readouterr().out
    assert main(["convert", "tf", str(tmp_path / "missing"), str(out)]) == 2
    errors = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
    assert len(errors) == 1 and "does not exist" in errors[0]
