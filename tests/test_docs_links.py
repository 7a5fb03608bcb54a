"""The docs hold together: every relative link in README.md and docs/ leads to a file of the
repository (and, with ``#anchor``, to a heading of it), every repository path they name in code
exists, and every setting is documented.

Links are read with markdown-it (CommonMark plus tables), so links inside code spans and code
blocks are not links, as on GitHub. Anchors are GitHub's heading slugs.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path
from urllib.parse import unquote

from markdown_it import MarkdownIt

from order_service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
_MARKDOWN = MarkdownIt("commonmark").enable("table")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_PATH = re.compile(r"[\w.-]+(/[\w.-]+)+")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@cache
def repository_files() -> frozenset[str]:
    """Paths (relative, POSIX) of the files git tracks or would track: not ignored ones."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return frozenset(path for path in listed if (ROOT / path).exists())


def github_slug(text: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def heading_anchors(text: str) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    tokens = _MARKDOWN.parse(text)
    for opening, inline in zip(tokens, tokens[1:], strict=False):
        if opening.type != "heading_open":
            continue
        words = "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))
        slug = github_slug(words)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def links(text: str) -> list[tuple[int, str]]:
    """(line, target) of every link and image, outside code."""
    lines = text.splitlines()
    found = []
    for block in _MARKDOWN.parse(text):
        if not block.children or not block.map:
            continue
        line = block.map[0]  # the block's first line; each link's own line is searched from it
        for token in block.children:
            target = token.attrGet("href") if token.type == "link_open" else token.attrGet("src")
            if token.type in ("link_open", "image") and target is not None:
                line = next((n for n in range(line, block.map[1]) if str(target) in lines[n]), line)
                found.append((line + 1, str(target)))
    return found


@cache
def anchors_of(path: Path) -> set[str]:
    return heading_anchors(path.read_text())


def broken_links(source: Path, text: str, files: frozenset[str]) -> list[str]:
    """What is wrong with the relative links of ``text``, read as the file ``source``."""
    problems = []
    for line, target in links(text):
        if _SCHEME.match(target) or target.startswith("//"):
            continue  # a URL: not this repository's business
        path_part, _, fragment = target.partition("#")
        where = f"{source.relative_to(ROOT)}:{line}: {target}"
        if path_part:
            base = ROOT if path_part.startswith("/") else source.parent
            resolved = (base / unquote(path_part).lstrip("/")).resolve()
            if not resolved.is_relative_to(ROOT):
                problems.append(f"{where}: outside the repository")
                continue
            relative = resolved.relative_to(ROOT).as_posix()
            is_dir = any(f.startswith(relative + "/") for f in files)
            if relative not in files and not is_dir:
                problems.append(f"{where}: no such file in the repository")
                continue
        else:
            resolved = source
        if fragment and resolved.suffix == ".md":
            anchors = heading_anchors(text) if resolved == source else anchors_of(resolved)
            if unquote(fragment).lower() not in anchors:
                problems.append(f"{where}: no heading with the anchor #{fragment}")
    return problems


def test_every_relative_link_and_anchor_resolves() -> None:
    files = repository_files()
    checked = 0
    problems = []
    for path in markdown_files():
        text = path.read_text()
        checked += len(links(text))
        problems += broken_links(path, text, files)
    assert not problems, "broken links:\n" + "\n".join(problems)
    assert checked > 50, f"only {checked} links found: is the parser reading the files?"


def test_the_checker_reports_what_is_broken_and_only_that() -> None:
    """A positive control: broken targets are reported; code, URLs and good links are not."""
    source = ROOT / "docs" / "example.md"
    text = "\n".join(
        [
            "# A title",
            "## Second `part` (here)",
            "[ok](api.md#endpoints) [ok](#second-part-here) [ok](../README.md) [ok](images/)",
            "[ok](https://example.com/x.md) ![ok](images/dashboard.png) [ok](/docs/api.md)",
            "[bad](no-such.md)",
            "[bad](api.md#no-such-heading)",
            "[bad](#missing)",
            "![bad](images/missing.png)",
            "[bad](../../outside.md)",
            "`[not a link](nowhere.md)`",
            "```",
            "[not a link](nowhere.md)",
            "```",
        ]
    )
    problems = broken_links(source, text, repository_files())
    assert problems == [
        "docs/example.md:5: no-such.md: no such file in the repository",
        "docs/example.md:6: api.md#no-such-heading: no heading with the anchor #no-such-heading",
        "docs/example.md:7: #missing: no heading with the anchor #missing",
        "docs/example.md:8: images/missing.png: no such file in the repository",
        "docs/example.md:9: ../../outside.md: outside the repository",
    ]


def test_github_slugs() -> None:
    assert github_slug("Webhooks (`python -m bridges.webhooks`)") == "webhooks-python--m-bridgeswebhooks"
    assert github_slug("Watching it: health, readiness, metrics") == "watching-it-health-readiness-metrics"
    assert heading_anchors("# Logs\n## Logs\n") == {"logs", "logs-1"}


def missing_paths(text: str, files: frozenset[str]) -> tuple[int, list[str]]:
    """How many code spans of ``text`` name a path under one of the repository's top-level
    directories (`order_service/config.py`, `clients/admin/`), and those of them that do not exist."""
    tops = {f.split("/")[0] for f in files if "/" in f}
    named, missing = 0, []
    for block in _MARKDOWN.parse(text):
        for token in block.children or []:
            value = token.content.rstrip("/")
            if token.type == "code_inline" and _PATH.fullmatch(value) and value.split("/")[0] in tops:
                named += 1
                if value not in files and not any(f.startswith(value + "/") for f in files):
                    missing.append(token.content)
    return named, missing


def test_every_repository_path_named_in_code_exists() -> None:
    files = repository_files()
    named = 0
    problems = []
    for path in markdown_files():
        count, missing = missing_paths(path.read_text(), files)
        named += count
        problems += [f"{path.relative_to(ROOT)}: `{value}`" for value in missing]
    assert not problems, "paths that do not exist:\n" + "\n".join(problems)
    assert named > 30, f"only {named} paths found: is the parser reading the files?"


def test_the_path_check_reports_what_is_missing_and_only_that() -> None:
    text = (
        "`order_service/config.py` `tests/` `order_service/no_such.py` `tests/nothing/`"
        " `var/admin-password` `python -m order_service.relay` `orders/<id>/status`\n"
        "```\norder_service/in_a_block.py\n```\n"
    )
    assert missing_paths(text, repository_files()) == (3, ["order_service/no_such.py", "tests/nothing/"])


def test_every_setting_is_in_the_configuration_page() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    variables = [f"ORDERBUS_{name.upper()}" for name in Settings.model_fields]
    assert len(variables) > 40
    missing = [v for v in variables if f"`{v}`" not in page]
    assert not missing, f"docs/configuration.md does not list: {', '.join(missing)}"
