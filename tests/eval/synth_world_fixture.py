"""A small synthetic world (12 videos x 32 frames: 6 OTB targets, 2 DAVIS val sequences).

Shared by the track and propagate tests: ``generate_world`` returns at once when the folder
already holds a world with the same parameters, so each test process generates it once.
"""

from __future__ import annotations

from pathlib import Path

from constcl.data.synth import generate_world

WORLD_PARAMS = {"num_videos": 12, "seed": 0, "frames": 32}


def small_world(base: Path) -> Path:
    """Generate (or reuse) the world under ``base / "track_propagate_world"``."""
    root = base / "track_propagate_world"
    generate_world(root, **WORLD_PARAMS)
    return root
