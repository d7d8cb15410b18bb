"""The documentation: the site builds with warnings as errors, and README / docs name real things.

`make docs` and the first test run the same strict build (mkdocs.yml): a broken link or anchor
between pages, a docs page missing from the nav, or an API name that no longer exists in
``src/`` (a ``::: constcl.x`` block, a docstring the parser cannot read) fails it. README.md is
not part of the site, so its relative links and anchors are checked here, and so are the
``constcl.*`` names and the source files (``eval/views.py``) that README and the docs pages
spell out in code.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
DOTTED = re.compile(r"`(constcl(?:\.[A-Za-z_]\w*)+)(?![\w<])")
FROM_IMPORT = re.compile(r"^\s*from (constcl(?:\.\w+)*) import \(?([\w, ]+)\)?\s*(?:#.*)?$")


def _outside_fences(text: str) -> str:
    """The Markdown text without its fenced code blocks."""
    out, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence:
            out.append(line)
    return "\n".join(out)


def _anchors(md_file: Path) -> set[str]:
    """The heading ids mkdocs gives a page (Python-Markdown's toc slugify, as mkdocs.yml)."""
    ids = set()
    for line in _outside_fences(md_file.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"`([^`]*)`", r"\1", m.group(1))
            ids.add(slugify(text, "-"))
    return ids


def test_anchor_ids_follow_mkdocs():
    # hand-worked: what mkdocs writes for these headings
    page = ROOT / "docs" / "data.md"
    assert "video-sources" in _anchors(page)            # "## Video sources"
    assert "pathlabel-csv" in _anchors(page)            # "### `path,label` CSV"


def test_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    warnings = [ln for ln in proc.stderr.splitlines() if "WARNING" in ln or "ERROR" in ln]
    assert proc.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(
        warnings or proc.stderr.splitlines()[-30:])
    # the pages exist and the API reference was generated from the docstrings
    for page in ("index.html", "pretraining/index.html", "troubleshooting/index.html",
                 "api/models/index.html", "api/losses/index.html", "api/eval/index.html"):
        assert (site / page).is_file(), page
    models = (site / "api/models/index.html").read_text(encoding="utf-8")
    assert 'id="constcl.models.build_model"' in models
    losses = (site / "api/losses/index.html").read_text(encoding="utf-8")
    assert 'id="constcl.losses.global_nt_xent.global_nt_xent"' in losses
    assert "temperature" in losses  # a parameter from the docstring's Args section
    # the heading ids README's links are checked against are the ones mkdocs wrote
    for md in (ROOT / "docs").rglob("*.md"):
        rel = md.relative_to(ROOT / "docs").with_suffix("")
        html = site / (rel.parent if rel.name == "index" else rel) / "index.html"
        ids = set(re.findall(r'id="([^"]+)"', html.read_text(encoding="utf-8")))
        assert _anchors(md) <= ids, (md.name, sorted(_anchors(md) - ids))


def test_readme_links_resolve():
    text = _outside_fences((ROOT / "README.md").read_text(encoding="utf-8"))
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    assert targets, "README.md links no docs page"
    bad = []
    for target in targets:
        path, _, anchor = target.partition("#")
        file = ROOT / path if path else ROOT / "README.md"
        if not file.exists():
            bad.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            bad.append(f"{target}: no heading with id {anchor!r} in {path or 'README.md'}")
    assert not bad, "README.md has broken links:\n" + "\n".join(bad)


def _resolve(name: str) -> None:
    """Import the longest module prefix of a dotted name, then get the remaining attributes."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as e:
            if e.name is not None and not name.startswith(e.name):
                raise  # a module that exists failed to import one of its own dependencies
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return
    raise ModuleNotFoundError(name)


def test_api_names_in_readme_and_docs_exist():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    names: dict[str, str] = {}
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for name in DOTTED.findall(text):
            names.setdefault(name, page.name)
        for line in text.splitlines():
            m = FROM_IMPORT.match(line)
            if m:
                for attr in filter(None, (a.strip() for a in m.group(2).split(","))):
                    names.setdefault(f"{m.group(1)}.{attr}", page.name)
    assert "constcl.load_encoder" in names and "constcl.models.build_model" in names
    bad = []
    for name, page in sorted(names.items()):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as e:
            bad.append(f"{page}: {name} ({type(e).__name__}: {e})")
    assert not bad, "names in the docs that the library does not have:\n" + "\n".join(bad)


def test_source_paths_in_readme_and_docs_exist():
    # `eval/views.py`, `src/constcl/config.py`, `bench/mutation.py`: a file named by its path
    # relative to the repository or to src/constcl must exist (a moved module leaves none stale)
    path = re.compile(r"`([\w.-]+(?:/[\w.-]+)+\.py)`")
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found, bad = 0, []
    for page in pages:
        for rel in path.findall(page.read_text(encoding="utf-8")):
            found += 1
            if not ((ROOT / rel).is_file() or (ROOT / "src" / "constcl" / rel).is_file()):
                bad.append(f"{page.relative_to(ROOT)}: {rel}")
    assert found > 10
    assert not bad, "files named in the docs that do not exist:\n" + "\n".join(bad)
