"""Build a TF Model Garden CVRL checkpoint with the official TensorFlow code, plus its features.

Not part of constcl and not run by ``make test``: it needs TensorFlow and tf-models-official,
which constcl does not depend on. It made ``tests/fixtures/tf/`` with

    python -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu tf-models-official
    /tmp/tfenv/bin/python bench/make_tf_fixture.py --variant tiny --out tests/fixtures/tf

under TensorFlow 2.20.0 (tensorflow-cpu 2.21.0 and tensorflow 2.20.0 wheels installed side by
side; ``tf.__version__`` 2.20.0), tf-keras 2.20.1, tf-models-official 2.20.0, Python 3.11.

What it builds: the model of the Model Garden's CVRL pretraining experiment
(``official/projects/video_ssl``, ``configs/experiments/cvrl_pretrain_k600_200ep.yaml``):
``video_ssl_pretrain_kinetics600`` with the yaml's R3D-50 backbone (temporal kernels 1, 1, 3, 3
per stage, stem conv 5 x 7 x 7 with temporal stride 2, stem pool temporal stride 1, no
self-gating) through ``build_video_ssl_pretrain_model``, and saves it the way the Model
Garden's trainer does (``tf.train.Checkpoint(global_step=..., model=model,
**model.checkpoint_items)``, see ``official/core/base_trainer.py``). ``--variant r3d50`` is that
network; ``--variant tiny`` is the same family with a smaller block table (registered as
``RESNET_SPECS[9]``: widths 8, 16, 32, 64, two blocks per stage; the Model Garden's v0 stem
has 64 channels whatever the table says) and a small projection head, so the committed
fixture stays small (checkpoint 1.4 MB, features and input 0.7 MB). constcl's ``r3d_tf_tiny``
is this network.

Weights: the Model Garden's own random initialisation under ``tf.random.set_seed``; BatchNorm
gamma, beta, moving mean and moving variance are then drawn from a seeded generator, so the
conversion has to carry non-trivial statistics. ``--bn-epsilon`` sets the backbone's
``norm_epsilon`` (the CVRL experiment uses 1e-5; the tiny fixture uses 1e-3 so that the
converter's epsilon handling is exercised).

Features: for a fixed input clip batch (B, T, H, W, 3) with values in [0, 1] (the Model
Garden's input range: ``zero_centering_image`` is False in the CVRL configs), the backbone's
endpoints 2..5 in inference mode (``training=False``), saved channels-last as TF returns them.

Outputs in ``--out``: ``ckpt-1.index``, ``ckpt-1.data-00000-of-00001``, ``expected.npz``
(``input`` and ``res2`` .. ``res5``) and ``fixture.json`` (versions, settings, shapes).
"""

from __future__ import annotations

import argparse
import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras
from official.core import exp_factory
from official.projects.video_ssl.configs import video_ssl as video_ssl_cfg  # noqa: F401
from official.projects.video_ssl.modeling import video_ssl_model
from official.vision.modeling.backbones import resnet_3d

TINY_MODEL_ID = 9
TINY_SPEC = [("bottleneck3d", 8, 2), ("bottleneck3d", 16, 2), ("bottleneck3d", 32, 2),
             ("bottleneck3d", 64, 2)]
CVRL_TEMPORAL_KERNELS = (1, 1, 3, 3)  # per stage, cvrl_pretrain_k600_200ep.yaml


def experiment(variant: str, bn_epsilon: float):
    """The CVRL pretraining experiment config with the yaml's backbone."""
    exp = exp_factory.get_exp_config("video_ssl_pretrain_kinetics600")
    model = exp.task.model
    depths = [3, 4, 6, 3] if variant == "r3d50" else [n for _, _, n in TINY_SPEC]
    model.backbone.resnet_3d.model_id = 50 if variant == "r3d50" else TINY_MODEL_ID
    model.backbone.resnet_3d.block_specs = tuple(
        {"temporal_kernel_sizes": (k,) * d, "temporal_strides": 1, "use_self_gating": False}
        for k, d in zip(CVRL_TEMPORAL_KERNELS, depths, strict=True))
    model.backbone.resnet_3d.stem_conv_temporal_kernel_size = 5
    model.backbone.resnet_3d.stem_conv_temporal_stride = 2
    model.backbone.resnet_3d.stem_pool_temporal_stride = 1
    model.norm_activation.norm_epsilon = bn_epsilon
    if variant == "tiny":
        model.hidden_dim = 32
        model.projection_dim = 16
    return exp


def randomise_batchnorm(model: tf_keras.Model, seed: int) -> int:
    """Give every BatchNormalization layer random gamma, beta and moving statistics."""
    rng = np.random.default_rng(seed)
    count = 0
    for var in model.variables:
        name = var.name
        shape = var.shape.as_list()
        if "gamma" in name:
            var.assign(rng.uniform(0.6, 1.4, shape).astype(np.float32))
        elif "beta" in name:
            var.assign(rng.normal(0.0, 0.2, shape).astype(np.float32))
        elif "moving_mean" in name:
            var.assign(rng.normal(0.0, 0.2, shape).astype(np.float32))
        elif "moving_variance" in name:
            var.assign(rng.uniform(0.5, 2.0, shape).astype(np.float32))
        else:
            continue
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=("tiny", "r3d50"), default="tiny")
    parser.add_argument("--out", required=True)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--bn-epsilon", type=float, default=None,
                        help="backbone norm_epsilon (default: 1e-3 tiny, 1e-5 r3d50 as in CVRL)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    eps = args.bn_epsilon if args.bn_epsilon is not None else (
        1e-3 if args.variant == "tiny" else 1e-5)
    resnet_3d.RESNET_SPECS[TINY_MODEL_ID] = TINY_SPEC
    tf.random.set_seed(args.seed)
    tf_keras.utils.set_random_seed(args.seed)
    exp = experiment(args.variant, eps)
    input_specs = tf_keras.layers.InputSpec(shape=[None, None, None, None, 3])
    model = video_ssl_model.build_video_ssl_pretrain_model(
        input_specs=input_specs, model_config=exp.task.model, num_classes=600)
    n_bn = randomise_batchnorm(model, args.seed + 1)

    rng = np.random.default_rng(args.seed + 2)
    clip = rng.uniform(0.0, 1.0, (args.batch, args.frames, args.size, args.size, 3))
    clip = clip.astype(np.float32)
    endpoints = model.backbone(tf.constant(clip), training=False)
    feats = {f"res{k}": v.numpy() for k, v in endpoints.items()}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    global_step = tf.Variable(1, dtype=tf.int64, trainable=False, name="global_step")
    ckpt = tf.train.Checkpoint(global_step=global_step, model=model, **model.checkpoint_items)
    ckpt.write(str(out / "ckpt-1"))
    np.savez(out / "expected.npz", input=clip, **feats)
    meta = {
        "variant": args.variant, "bn_epsilon": eps, "seed": args.seed,
        "input_range": [0.0, 1.0], "input_layout": "B T H W C",
        "input_shape": list(clip.shape), "feature_layout": "B T H W C",
        "feature_shapes": {k: list(v.shape) for k, v in feats.items()},
        "batchnorm_variables_randomised": n_bn,
        "tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
        "tf_models_official": metadata.version("tf-models-official"),
        "python": platform.python_version(),
        "made_by": "bench/make_tf_fixture.py",
    }
    (out / "fixture.json").write_text(json.dumps(meta, indent=2) + "\n")
    for k, v in feats.items():
        print(k, v.shape, f"mean {v.mean():.4f} std {v.std():.4f} zeros {np.mean(v == 0):.2f}")
    print("variables:", len(tf.train.list_variables(str(out / "ckpt-1"))))


if __name__ == "__main__":
    main()
