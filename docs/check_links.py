"""Fail on a broken internal link of the built site.

Usage: ``python docs/check_links.py build/docs``. Reads every HTML page under the
directory and checks each relative ``href`` and ``src``: the file it names must exist and,
where it names an anchor (``page.html#anchor``), the page must have an element with that
id. Links to other sites are not followed, and the theme's templates in ``_static``
are not pages. Exits 1 and lists the broken links, if any.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    """The ids and the relative links of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            elif name in ("href", "src") and not (tag == "link" and "://" in value):
                self.links.append(value)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def broken_links(site: Path) -> list[str]:
    """Every broken internal link under ``site``, as ``page: link`` lines."""
    paths = [p for p in sorted(site.rglob("*.html")) if "_static" not in p.parts]
    pages = {path.resolve(): _parse(path) for path in paths}
    broken = []
    for path, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(site.resolve())}: {link}")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if fragment not in ids:
                    broken.append(f"{path.relative_to(site.resolve())}: {link} (no such anchor)")
    return broken


def main(argv: list[str]) -> int:
    """Check the site in ``argv[0]``; print what is broken."""
    if len(argv) != 1:
        print(__doc__)
        return 2
    site = Path(argv[0])
    if not (site / "index.html").exists():
        print(f"{site} holds no built site (no index.html)")
        return 2
    broken = broken_links(site)
    for line in broken:
        print(line)
    count = len(list(site.rglob("*.html")))
    print(f"{count} pages, {len(broken)} broken internal links")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
