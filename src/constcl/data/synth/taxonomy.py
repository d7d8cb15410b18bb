"""Names and ids of the synthetic world: shapes, motion types (actions) and video classes.

A video's class is a function of its MAIN object (track id 1, the largest object): its shape and
the family its motions belong to. ``Travel`` motions move the object across the frame;
``Transform`` motions keep it in place and change its pose or size. Telling the two families
apart needs time; telling the shapes apart needs space.

Motion types double as AVA-style actions: every object carries one motion type per time
segment, and the AVA rows label an object's box with its current motion type.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")

# Motion types in AVA action-id order (id = index + 1).
ACTIONS: tuple[str, ...] = (
    "still",
    "straight",
    "bounce",
    "circle",
    "zigzag",
    "spin",
    "grow",
    "shrink",
)

# Families of main-object motion; every segment of the main object comes from its family.
FAMILIES: dict[str, tuple[str, ...]] = {
    "Travel": ("straight", "bounce", "circle", "zigzag"),
    "Transform": ("spin", "grow", "shrink"),
}


def class_name(shape: str, family: str) -> str:
    """UCF101-style CamelCase class name, e.g. ``("star", "Travel") -> "StarTravel"``."""
    return f"{shape.capitalize()}{family}"


def class_table() -> list[tuple[str, str, str]]:
    """All classes as ``(class_name, shape, family)``, sorted by class name.

    The order is alphabetical on purpose: torchvision's folder datasets number classes by sorted
    folder name, UCF101's ``classInd.txt`` is alphabetical, so 0-based label ``i`` here equals
    ``classInd`` id ``i + 1`` and the sorted folder index.
    """
    table = [(class_name(s, f), s, f) for s in SHAPES for f in FAMILIES]
    return sorted(table)


def action_id(action: str) -> int:
    """1-based AVA action id of a motion type."""
    return ACTIONS.index(action) + 1
