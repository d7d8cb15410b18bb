"""A small synthetic world shared by the classify and detect tests.

``generate_world`` returns at once when the folder already holds a world with the same
parameters, so the session fixtures of several test modules generate it only once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from constcl.data.synth import generate_world

WORLD_PARAMS = {"num_videos": 24, "seed": 0, "size": 64, "frames": 48, "fps": 25,
                "tracks": "none", "workers": 2}


def make_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a 24-video, 64 x 64, 48-frame world (UCF101, Kinetics and AVA layouts)."""
    root = tmp_path_factory.getbasetemp() / "eval_world"
    return generate_world(root, **WORLD_PARAMS).root
