"""Action classification (UCF101 / HMDB51 / Kinetics layouts): linear probe, fine-tuning, kNN.

    from constcl.eval import classify
    result = classify.run(classify.Settings(checkpoint="runs/demo/backbone.safetensors",
                                            data="data/synth", out="eval/classify",
                                            frames=8, size=112, clips=2, crops=1))
    result["metrics"]["top1"]

``data`` reads the split files, ``scoring`` averages views per video, ``finetune`` trains the
whole network, ``task`` holds :class:`Settings` and :func:`run`.
"""

from constcl.eval.classify.task import MODES, Settings, run

__all__ = ["MODES", "Settings", "run"]
