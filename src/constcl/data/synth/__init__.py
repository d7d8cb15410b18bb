"""The synthetic world: videos of moving textured objects with exact ground truth.

:func:`generate_world` (or ``constcl data synth OUT --videos N --seed S``) writes H.264 videos
in class folders plus annotations in the layouts of Kinetics, UCF101, AVA v2.2, OTB and
DAVIS-2017; see ``docs/synthetic_world.md``.
"""

from __future__ import annotations

from constcl.data.synth.world import WorldParams, WorldSummary, generate_world, split_videos

__all__ = ["WorldParams", "WorldSummary", "generate_world", "split_videos"]
