"""Shared fixture of the track / propagate tests: the small synthetic world."""

from pathlib import Path

import pytest

from tests.eval.synth_world_fixture import small_world


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    return small_world(tmp_path_factory.getbasetemp())
