"""Spatio-temporal action detection in the AVA v2.2 layout: frame mAP@0.5 of a linear RoI
classifier on frozen res5 features.

    from constcl.eval import detect
    result = detect.run(detect.Settings(checkpoint="runs/demo/backbone.safetensors",
                                        data="data/synth/ava", out="eval/detect",
                                        frames=8, size=128))
    result["metrics"]["map"]

``data`` reads the AVA files, ``roi`` pools box features, ``task`` holds :class:`Settings`
and :func:`run`.
"""

from constcl.eval.detect.task import BOX_SOURCES, Settings, run

__all__ = ["BOX_SOURCES", "Settings", "run"]
