"""Every relative link in README.md and docs/*.md resolves: the file exists, and an #anchor names a
heading of that file as GitHub renders it (or an explicit `<a name>`/`id`). Pure: reads files only."""

import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target); the target up to white space or the closing parenthesis
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)


def prose_lines(text: str):
    """(number, line) of the lines outside fenced code blocks."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text (code spans and links as their text,
    emphasis marks dropped), lower case, every character that is not a letter, digit, space,
    hyphen or underscore removed, then each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)
    kept = "".join(
        c for c in text.lower() if c in " -_" or unicodedata.category(c)[0] in ("L", "N")
    )
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file: its headings' slugs, repeated ones numbered -1, -2 as
    GitHub numbers them, and explicit HTML anchors."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text()):
        out.update(HTML_ANCHOR.findall(line))
        m = HEADING.match(line)
        if not m:
            continue
        s = slug(m.group(2))
        out.add(f"{s}-{seen[s]}" if s in seen else s)
        seen[s] = seen.get(s, 0) + 1
    return out


def relative_links(path: Path):
    """(line number, target) of every link that is not to another site."""
    for n, line in prose_lines(path.read_text()):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, mailto:, ...
                yield n, target


def broken_links(path: Path) -> list[str]:
    out = []
    for n, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            out.append(f"{path.name}:{n}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            out.append(f"{path.name}:{n}: {target}: no heading #{anchor} in {dest.name}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_readme_links_to_every_page():
    linked = {(REPO / t.partition("#")[0]).resolve() for _, t in relative_links(REPO / "README.md")}
    assert {p.resolve() for p in PAGES[1:]} <= linked


def test_slugs_as_github_makes_them():
    assert slug("`charrnn`: train and sample locally") == "charrnn-train-and-sample-locally"
    assert slug("Redis users (least privilege)") == "redis-users-least-privilege"
    assert slug("Workers on other hosts: what the tests prove") == (
        "workers-on-other-hosts-what-the-tests-prove"
    )
    assert slug("Cells, streams, optimizers and schedules") == (
        "cells-streams-optimizers-and-schedules"
    )
    assert slug("How **far** one_redis [carries](x.md) it") == "how-far-one_redis-carries-it"


def test_broken_links_are_found(tmp_path):
    (tmp_path / "a.md").write_text(
        "# Top\n\n## Two words\n\n## Two words\n\n"
        "[ok](#two-words) [ok](#two-words-1) [ok](b.md#there) [ok](https://x.org/none)\n"
        "[bad](#two-words-2) [bad](missing.md) [bad](b.md#nowhere) `[code](not-a-link.md)`\n"
        "```\n[fenced](not-a-link-either.md)\n```\n"
    )
    (tmp_path / "b.md").write_text("# There\n")
    assert broken_links(tmp_path / "a.md") == [
        "a.md:8: #two-words-2: no heading #two-words-2 in a.md",
        "a.md:8: missing.md: no such file",
        "a.md:8: b.md#nowhere: no heading #nowhere in b.md",
    ]
