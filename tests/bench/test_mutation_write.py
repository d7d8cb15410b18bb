"""bench/mutation.py --write: the table is replaced, the hand-written notes are kept, the
sections around it are untouched."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import mutation  # noqa: E402

OLD = """# Benchmarks

## Speed

fast

## Mutation testing

old date

| old table |

### Notes

Run 1 was noisy.

Equivalent mutant: x.

## After

untouched
"""


def test_write_section_replaces_the_table_and_keeps_the_notes(tmp_path):
    path = tmp_path / "B.md"
    path.write_text(OLD)
    mutation.write_section(path, "## Mutation testing\n\nnew date\n\n| new table |\n")
    assert path.read_text() == """# Benchmarks

## Speed

fast

## Mutation testing

new date

| new table |

### Notes

Run 1 was noisy.

Equivalent mutant: x.

## After

untouched
"""


def test_write_section_appends_without_notes(tmp_path):
    path = tmp_path / "B.md"
    path.write_text("# Benchmarks\n\n## Speed\n\nfast\n\n")
    mutation.write_section(path, "## Mutation testing\n\nnew\n")
    assert path.read_text() == "# Benchmarks\n\n## Speed\n\nfast\n\n## Mutation testing\n\nnew\n"
