"""Local sets v3 (docs/synthetic_world.md): look-alike instances that cross the target, the
target visible in every frame, deterministic files in the layouts the evaluations read."""

import hashlib

import numpy as np
import pytest

from constcl.data.synth import local_sets
from constcl.data.synth.local_sets import generate_local_sets, sample_local_scene
from constcl.data.synth.render import render, visible_boxes
from constcl.data.synth.taxonomy import SHAPES
from constcl.eval.propagate.data import load_sequences as load_davis
from constcl.eval.propagate.data import read_annotations
from constcl.eval.track.data import load_sequences as load_otb


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    return generate_local_sets(tmp_path_factory.mktemp("lv3") / "v3", sequences=4, seed=3,
                               workers=1)


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objects_look_alike_but_for_shape_and_every_other_one_crosses_the_target(seed):
    rng = np.random.default_rng(seed)
    scene = sample_local_scene(rng, size=128, frames=64)
    target, others = scene.objects[0], scene.objects[1:]
    assert 3 <= len(scene.objects) <= 4
    assert len({o.shape for o in scene.objects}) == len(scene.objects)  # shapes distinct
    for o in others:
        assert o.radius == target.radius
        assert np.array_equal(o.texture, target.texture)
        assert np.array_equal(o.colours, target.colours)
        # passes within half a radius (per axis) of the target's centre at some frame
        gap = np.linalg.norm(o.poses[:, :2] - target.poses[:, :2], axis=1).min()
        assert gap <= 0.5 * 2 ** 0.5 * target.radius + 1e-6
    # the shared colours drift: the first frame's hue is not the last's
    assert np.abs(target.colours[0] - target.colours[-1]).max() > 10
    scale = target.poses[:, 3]
    assert 0.7 - 1e-9 <= scale[-1] / scale[0] <= 1.4 + 1e-9
    # the whole target stays inside the frame at its largest extent
    reach = 1.2 * target.radius * scale
    assert (target.poses[:, 0] - reach >= -1e-6).all() and (target.poses[:, 0] + reach <= 128).all()
    assert (target.poses[:, 1] - reach >= -1e-6).all() and (target.poses[:, 1] + reach <= 128).all()


def test_files_follow_the_layouts_and_the_ground_truth(sets):
    otb = load_otb(sets / "otb")
    davis = load_davis(sets / "davis")
    names = [s.name for s in davis]
    assert len(otb) == len(davis) == 4 and sorted(s.name for s in otb) == sorted(names)
    for seq in otb:
        assert len(seq.frames) == 64 and seq.boxes.shape == (64, 4)
        assert (seq.boxes[:, 2:] > 0).all()  # visible (a box) in every frame
    for seq in davis:
        labels, ids = read_annotations(seq.annotations[:1])
        assert len(ids) >= 3  # every object is in the first frame's mask
        assert seq.name.split("_")[1].lower() in SHAPES


def test_otb_boxes_are_the_target_masks_tight_boxes(sets):
    seq = sorted(load_otb(sets / "otb"), key=lambda s: s.name)[0]
    dav = {s.name: s for s in load_davis(sets / "davis")}[seq.name]
    labels, _ = read_annotations(dav.annotations)
    for t in (0, 31, 63):
        rows, cols = np.nonzero(labels[t] == 1)
        x, y, w, h = seq.boxes[t]
        assert (x - 1, y - 1, w, h) == (cols.min(), rows.min(), cols.max() - cols.min() + 1,
                                        rows.max() - rows.min() + 1)


def test_same_parameters_same_bytes_and_reuse(sets, tmp_path):
    again = generate_local_sets(tmp_path / "v3", sequences=4, seed=3, workers=2)
    assert _digest(again) == _digest(sets)
    before = (sets / "summary.json").stat().st_mtime_ns
    generate_local_sets(sets, sequences=4, seed=3, workers=1)  # complete: reused as is
    assert (sets / "summary.json").stat().st_mtime_ns == before
    other = generate_local_sets(tmp_path / "v3", sequences=2, seed=4, workers=1)
    assert len(load_otb(other / "otb")) == 2  # other parameters regenerate


def test_refuses_a_foreign_folder_and_bad_parameters(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not overwriting"):
        generate_local_sets(tmp_path, sequences=1, workers=1)
    with pytest.raises(ValueError, match="sequences"):
        generate_local_sets(tmp_path / "new", sequences=0)


def test_rendered_target_is_visible_in_every_frame():
    rng = np.random.default_rng(5)
    for _ in range(3):
        scene = sample_local_scene(rng, size=128, frames=32)
        _, labels = render(scene)
        if local_sets._acceptable(labels, len(scene.objects)):
            _, pixels = visible_boxes(labels, len(scene.objects))
            assert (pixels[:, 0] >= 16).all()
            return
    pytest.fail("no acceptable scene in 3 draws")
