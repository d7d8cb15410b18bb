"""Single-object tracking: SiamFC on frozen feature maps, OTB-2015 one-pass evaluation.

    from constcl.eval import track
    result = track.run(track.Settings(checkpoint="runs/demo/backbone.safetensors",
                                      data="data/synth", out="eval/track", sequences=8))
    result["metrics"]["success_auc"]

``data`` reads OTB sequences, ``siamfc`` is the tracker, ``task`` holds :class:`Settings` and
:func:`run`.
"""

from constcl.eval.track.siamfc import SiamFCConfig
from constcl.eval.track.task import Settings, run

__all__ = ["Settings", "SiamFCConfig", "run"]
