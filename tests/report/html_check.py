"""A strict well-formedness check of an HTML page with the standard library's parser."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
BLOCK = {"div", "figure", "table", "section", "ul", "ol", "h1", "h2", "h3", "p", "details",
         "header", "main", "nav"}


class StrictChecker(HTMLParser):
    """Collects errors: unclosed or mis-nested elements, closed void elements, block elements
    inside <p>, duplicate ids, <img> without alt; and every link (img src, a href)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.doctype: str | None = None
        self.counts: dict[str, int] = {}

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if "id" in a:
            if a["id"] in self.ids:
                self.errors.append(f"duplicate id {a['id']!r}")
            self.ids.append(a["id"])
        if tag == "img":
            if not a.get("alt"):
                self.errors.append(f"img without alt at {self.getpos()}")
            self.links.append(("img", a.get("src") or ""))
        if tag == "a":
            self.links.append(("a", a.get("href") or ""))
        if tag in BLOCK and "p" in self.stack:
            self.errors.append(f"<{tag}> inside <p> at {self.getpos()}")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.errors.append(f"self-closed non-void <{tag}/> at {self.getpos()}")
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"end tag of void <{tag}> at {self.getpos()}")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> at {self.getpos()} closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def check_page(path: Path) -> StrictChecker:
    """Parse ``path``; assert it is well formed and every relative link resolves."""
    checker = StrictChecker()
    checker.feed(path.read_text(encoding="utf-8"))
    checker.close()
    assert checker.doctype is not None and checker.doctype.lower() == "doctype html"
    assert checker.errors == []
    assert checker.stack == [], f"unclosed elements: {checker.stack}"
    assert checker.counts.get("html") == 1 and checker.counts.get("h1") == 1
    for kind, link in checker.links:
        assert link, f"empty {kind} link"
        if link.startswith("#"):
            assert link[1:] in checker.ids, f"anchor {link} has no target"
            continue
        parsed = urlparse(link)
        assert not parsed.scheme and not parsed.netloc and not link.startswith("/"), link
        assert (path.parent / unquote(parsed.path)).is_file(), f"missing file {link}"
    return checker
