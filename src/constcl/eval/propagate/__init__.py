"""Semi-supervised video object segmentation by label propagation, DAVIS-2017 J&F.

    from constcl.eval import propagate
    result = propagate.run(propagate.Settings(checkpoint="runs/demo/backbone.safetensors",
                                              data="data/synth", out="eval/davis"))
    result["metrics"]["J&F-Mean"]

``data`` reads DAVIS frames and masks, ``algorithm`` propagates labels through feature
affinities, ``overlay`` draws the overlays, ``task`` holds :class:`Settings` and :func:`run`.
"""

from constcl.eval.propagate.algorithm import PropagationConfig
from constcl.eval.propagate.task import Settings, run

__all__ = ["PropagationConfig", "Settings", "run"]
