"""Tiny test videos, written once per session with PyAV."""

from __future__ import annotations

from pathlib import Path

import pytest

from .video_fixtures import make_videos


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Good, short, still, variable-frame-rate and broken videos in one folder."""
    return make_videos(tmp_path_factory.mktemp("videos"))
