"""Export -> evaluation loaders: each ``--branch`` gets the res5 copy it names, buffers included.

The model is exported with the project's ``export_backbone`` and read back with both loaders
that ``constcl eval`` uses (``load_backbone`` and ``load_encoder``); the loaded network's res5
features are compared with the trained model's own modules, called one by one.
"""

import argparse
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from constcl.engine.export import export_backbone
from constcl.eval.encoder import encoder_identity, load_backbone, load_encoder, pooled_res5
from constcl.models import build_model

TRUNK = ("stem", "res2", "res3", "res4")


def config_of(variant, local_source):
    return {"model": {"backbone": "r3d_tiny", "variant": variant, "local_source": local_source}}


def perturb(module, seed):
    """Weights and BatchNorm running statistics moved away from their initial values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


def trained_model(variant="constcl", local_source="y"):
    torch.manual_seed(0)
    model = build_model("r3d_tiny", variant=variant, local_source=local_source, context_length=3)
    perturb(model.backbone, 1)
    if model.res5_local is not None:
        perturb(model.res5_local, 2)
    return model.eval()


def reference_maps(model, x):
    """(global res5, local map) of the model, computed stage by stage."""
    with torch.no_grad():
        res4 = x
        for name in TRUNK:
            res4 = getattr(model.backbone, name)(res4)
        res5 = model.backbone.res5(res4)
        if model.local_source == "y" and model.res5_local is not None:
            return res5, model.res5_local(res4)
        return res5, res5 if model.local_source == "shared" else res4


def loaders(path, branch):
    """Both loaders used by ``constcl eval``: the library call and the CLI-argument path."""
    args = argparse.Namespace(checkpoint=str(path), backbone=None, branch=branch, seed=0,
                              input_norm=None)
    return {"load_backbone": load_backbone(path, branch), "load_encoder": load_encoder(args)}


@pytest.fixture(scope="module")
def clip():
    return torch.rand(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1


def test_y_shape_export_gives_each_branch_its_own_res5(tmp_path, clip):
    model = trained_model()
    path = export_backbone(model, tmp_path / "backbone.safetensors",
                           config_of("constcl", "y"))
    want_global, want_local = reference_maps(model, clip)
    assert not torch.allclose(want_global, want_local, atol=1e-3)  # the copies really differ
    for branch, want in (("global", want_global), ("local", want_local)):
        for name, net in loaders(path, branch).items():
            assert not net.training, name  # BatchNorm must use the exported running stats
            with torch.no_grad():
                got = net.forward_features(clip)["res5"]
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"{name} {branch}")
            torch.testing.assert_close(pooled_res5(net, clip), want.mean(dim=(2, 3, 4)),
                                       rtol=1e-5, atol=1e-5)
    # the feature-cache identity tells the branches apart
    ids = [encoder_identity(argparse.Namespace(checkpoint=str(path), backbone=None, branch=b,
                                               input_norm=None, seed=0))
           for b in ("global", "local")]
    assert ids[0] != ids[1]


def test_shared_export_reads_the_one_res5_for_both_branches(tmp_path, clip):
    model = trained_model(local_source="shared")
    path = export_backbone(model, tmp_path / "backbone.safetensors",
                           config_of("constcl", "shared"))
    want, _ = reference_maps(model, clip)
    for branch in ("global", "local"):
        for name, net in loaders(path, branch).items():
            with torch.no_grad():
                got = net.forward_features(clip)["res5"]
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"{name} {branch}")


@pytest.mark.parametrize("variant, local_source", [("cvrl", "y"), ("constcl", "res4")])
def test_no_local_res5_copy_is_a_clear_error(tmp_path, clip, variant, local_source):
    model = trained_model(variant, local_source)
    path = export_backbone(model, tmp_path / "backbone.safetensors",
                           config_of(variant, local_source))
    want, _ = reference_maps(model, clip)
    for name, net in loaders(path, "global").items():
        with torch.no_grad():
            got = net.forward_features(clip)["res5"]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=name)
    with pytest.raises(ValueError, match="no local res5"):
        load_backbone(path, "local")
    with pytest.raises(ValueError, match="no local res5"):
        load_encoder(argparse.Namespace(checkpoint=str(path), backbone=None, branch="local",
                                        input_norm=None, seed=0))


def test_cache_identity_follows_the_weights_not_the_file_bytes(tmp_path):
    """safetensors writes its metadata in an order that can differ between processes, so two
    exports of the same weights may differ in bytes; the cache identity must not."""
    from safetensors.torch import load_file, save_file

    from constcl.eval.encoder import weights_digest

    tensors = {"trunk.w": torch.arange(6.0).view(2, 3), "res5_global.b": torch.ones(2).half()}
    meta = {"backbone": "r3d_tiny", "variant": "constcl", "local_source": "y", "format": "x"}
    save_file(tensors, str(tmp_path / "a.safetensors"), metadata=meta)
    # same content, metadata and tensors given in another order, written by hand so the bytes
    # differ for certain: the header's JSON lists the keys in another order
    header = {"__metadata__": dict(reversed(list(meta.items())))}
    blobs, offset = [], 0
    for key in reversed(list(tensors)):
        raw = tensors[key].contiguous().view(torch.uint8).numpy().tobytes()
        dtype = {torch.float32: "F32", torch.float16: "F16"}[tensors[key].dtype]
        header[key] = {"dtype": dtype, "shape": list(tensors[key].shape),
                       "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    (tmp_path / "b.safetensors").write_bytes(len(text).to_bytes(8, "little") + text
                                             + b"".join(blobs))
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert a.read_bytes() != b.read_bytes()
    assert {k: v.tolist() for k, v in load_file(str(b)).items()} == \
        {k: v.tolist() for k, v in tensors.items()}
    assert weights_digest(a) == weights_digest(b)
    changed = dict(tensors, **{"trunk.w": torch.arange(6.0).view(2, 3) + 1e-3})
    save_file(changed, str(tmp_path / "c.safetensors"), metadata=meta)
    assert weights_digest(tmp_path / "c.safetensors") != weights_digest(a)
    save_file(tensors, str(tmp_path / "d.safetensors"), metadata=dict(meta, variant="cvrl"))
    assert weights_digest(tmp_path / "d.safetensors") != weights_digest(a)
    # the digest is computed once per file version: replacing the file as an export does
    # (temporary file, then rename) gives the new content's digest
    first = weights_digest(a)
    save_file(changed, str(tmp_path / "a.tmp"), metadata=meta)
    (tmp_path / "a.tmp").replace(a)
    assert weights_digest(a) == weights_digest(tmp_path / "c.safetensors") != first


def test_input_norm_travels_with_the_export(tmp_path, clip):
    """A network trained with input_norm=clip is evaluated with it (read from the metadata);
    older exports (no such metadata) load as "none"; a contradicting request is an error."""
    torch.manual_seed(0)
    model = build_model("r3d_tiny", variant="cvrl", input_norm="clip")
    perturb(model.backbone, 1)
    model.eval()
    config = {"model": {**config_of("cvrl", "y")["model"], "input_norm": "clip"}}
    path = export_backbone(model, tmp_path / "clip.safetensors", config)
    with torch.no_grad():
        want = model.backbone.forward_features(clip)["res5"]
    for name, net in loaders(path, "global").items():
        assert net.input_norm == "clip", name
        with torch.no_grad():
            torch.testing.assert_close(net.forward_features(clip)["res5"], want, rtol=1e-5,
                                       atol=1e-5, msg=name)
    with pytest.raises(ValueError, match="input_norm='clip'"):
        load_backbone(path, "global", input_norm="none")
    with safe_open(str(path), "pt") as f:  # an export written before the field existed
        meta = {k: v for k, v in f.metadata().items() if k != "input_norm"}
        save_file({k: f.get_tensor(k) for k in f.keys()}, str(tmp_path / "old.safetensors"),  # noqa: SIM118
                  metadata=meta)
    assert load_backbone(tmp_path / "old.safetensors", "global").input_norm == "none"
    # the random-init baseline's identity names its input normalisation
    ids = {norm: encoder_identity(argparse.Namespace(checkpoint="random", backbone="r3d_tiny",
                                                     branch="global", input_norm=norm, seed=0))
           for norm in (None, "none", "clip")}
    assert ids[None] == ids["none"] != ids["clip"]


def test_export_file_mode_follows_the_umask_not_safetensors_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = export_backbone(trained_model(), tmp_path / "backbone.safetensors",
                               config_of("constcl", "y"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
