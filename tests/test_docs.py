"""The docs name real code: every repository path written in backticks in docs/architecture.md and
docs/data-contracts.md exists, and every ``path.py:Name`` is defined in its file. Every relative markdown link
of README.md and docs/*.md (``[text](target#anchor)``, pictures too) leads to a file of the repository and, where
it names an anchor, to a heading of that file.

A backticked token is a repository path when it is made of path characters and either starts with
one of the repository's top-level folders (``rodin_core/``, ``render/``, ``workflows/``, ``infra/``, ...) or
ends in ``.py``, ``.md``, ``.toml`` or ``.yaml`` (then it is resolved from the repository root).
Store paths such as ``renders/`` or ``data/tiny``, URIs and commands are not repository paths.
``path.py:Name`` / ``path.py::name`` also need ``def Name``, ``class Name`` or ``Name =`` in the
file (each part of a dotted ``Class.method``); ``*`` must match a file; ``{a,b}`` expands. The left
column of the "Moved modules" tables lists old paths and is not checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ("docs/architecture.md", "docs/data-contracts.md")
REPO_FOLDERS = ("benchmarks", "docs", "infra", "render", "rodin_core", "tests", "workflows")
"""Top-level folders of the repository: a backticked token starting with one of them is a repository path."""
PATH_SUFFIXES = (".py", ".md", ".toml", ".yaml")
MOVED_SECTION = "moved modules"

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_TOKEN = re.compile(r"(?P<path>[\w.{},*/-]+?)(?:::?(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*))?")
_BRACES = re.compile(r"\{([^{}]*)\}")
_LINK = re.compile(r"\]\((?P<target>[^()\s]+)\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(?P<title>.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
LINKED_DOCS = ("README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))


@dataclass(frozen=True)
class DocPath:
    """One repository path written in a doc: the backticked token, the path and the name after ``:``."""

    token: str
    path: str
    name: str | None


def expand_braces(path: str) -> list[str]:
    """``a/{b,c}.py`` -> ``["a/b.py", "a/c.py"]`` (nested and repeated groups too)."""
    match = _BRACES.search(path)
    if match is None:
        return [path]
    head, tail = path[:match.start()], path[match.end():]
    return [p for option in match.group(1).split(",") for p in expand_braces(head + option + tail)]


def is_repo_path(path: str) -> bool:
    """Whether a token's path part names a file or folder of the repository (see the module docstring)."""
    first = path.split("/", 1)[0]
    return ("/" in path and first in REPO_FOLDERS) or path.endswith(PATH_SUFFIXES)


def without_moved_from(text: str) -> str:
    """``text`` with the first cell of every table row under a "Moved modules" heading blanked."""
    lines, in_moved, level = text.splitlines(), False, 0
    for index, line in enumerate(lines):
        heading = re.match(r"(#+)\s+(.*)", line)
        if heading:
            if MOVED_SECTION in heading.group(2).lower():
                in_moved, level = True, len(heading.group(1))
            elif in_moved and len(heading.group(1)) <= level:
                in_moved = False
        elif in_moved and line.lstrip().startswith("|"):
            cells = line.split("|")
            if len(cells) > 2:
                cells[1] = " "
                lines[index] = "|".join(cells)
    return "\n".join(lines)


def doc_paths(text: str) -> list[DocPath]:
    """The repository paths written in backticks in a markdown ``text``, outside fenced code blocks and
    outside the left column of the "Moved modules" tables, in order of appearance."""
    found = []
    for code in _INLINE_CODE.findall(_FENCE.sub("", without_moved_from(text))):
        token = code.strip()
        match = _TOKEN.fullmatch(token)
        if match is None:
            continue
        paths = expand_braces(match.group("path"))
        if all(is_repo_path(p) for p in paths):
            found.extend(DocPath(token, p, match.group("name")) for p in paths)
    return found


def _defines(source: str, name: str) -> bool:
    """Whether ``source`` defines ``name`` as a function, class or assigned name (any indentation)."""
    n = re.escape(name)
    return re.search(rf"^[ \t]*(?:(?:async[ \t]+)?def|class)[ \t]+{n}\b|^[ \t]*{n}[ \t]*(?::[^=\n]*)?=[^=]",
                     source, re.MULTILINE) is not None


def problems(text: str, root: Path = REPO) -> list[str]:
    """What is wrong with the repository paths of a doc's ``text``: missing paths and undefined names."""
    found: list[str] = []
    for ref in dict.fromkeys(doc_paths(text)):
        targets = sorted(root.glob(ref.path)) if "*" in ref.path else [root / ref.path]
        if not targets or not all(t.exists() for t in targets):
            found.append(f"`{ref.token}`: {ref.path} does not exist")
            continue
        if ref.name is None:
            continue
        if not ref.path.endswith(".py") or len(targets) != 1 or not targets[0].is_file():
            found.append(f"`{ref.token}`: a name can only follow one .py file")
            continue
        source = targets[0].read_text(encoding="utf-8")
        undefined = [part for part in ref.name.split(".") if not _defines(source, part)]
        if undefined:
            found.append(f"`{ref.token}`: {ref.path} defines no {', '.join(undefined)}")
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_doc_paths_exist(doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    assert doc_paths(text), f"{doc} names no repository path; is the parser still right?"
    wrong = problems(text)
    assert not wrong, f"{doc} names paths that are not in the repository:\n" + "\n".join(wrong)


def test_readme_links_the_architecture() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert re.search(r"\]\(docs/architecture\.md(#[^)]*)?\)", readme), "README.md must link docs/architecture.md"


def test_a_missing_path_is_reported(tmp_path: Path) -> None:
    original = (REPO / DOCS[0]).read_text(encoding="utf-8")
    bogus = ("\n\nAlso see `rodin_core/no_such_module.py`, `rodin_core/storage.py:NoSuchThing` and "
             "`workflows/cli.py::main` (real).\n")
    copy = tmp_path / "architecture.md"
    copy.write_text(original + bogus, encoding="utf-8")
    new = set(problems(copy.read_text(encoding="utf-8"))) - set(problems(original))
    assert new == {"`rodin_core/no_such_module.py`: rodin_core/no_such_module.py does not exist",
                   "`rodin_core/storage.py:NoSuchThing`: rodin_core/storage.py defines no NoSuchThing"}


def test_parser() -> None:
    text = """
## Where

| a | `rodin_core/storage.py:ShardWriter.commit`, `render/blender_*.py`, `rodin_core/{cameras,imaging}.py` |

Store paths are not repository paths: `renders/`, `data/tiny`, `s3://bucket/prefix`,
`<root>/<stage>/manifests/<shard_id>.json`, `rodin fit --out data/tiny`; files at the root are: `pyproject.toml`.

```text
`rodin_core/in_a_fence.py`
```

## Moved modules

| old path | new path |
|---|---|
| `rodin_core/gone.py` | `rodin_core/checkpoint.py` |

## After

`rodin_core/gone_again.py`
"""
    found = [(p.path, p.name) for p in doc_paths(text)]
    assert found == [("rodin_core/storage.py", "ShardWriter.commit"), ("render/blender_*.py", None),
                     ("rodin_core/cameras.py", None), ("rodin_core/imaging.py", None), ("pyproject.toml", None),
                     ("rodin_core/checkpoint.py", None), ("rodin_core/gone_again.py", None)]
    assert problems(text) == ["`rodin_core/gone_again.py`: rodin_core/gone_again.py does not exist"]


def heading_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, inline code marks and punctuation dropped (hyphens and
    underscores kept), each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", title.replace("`", "").lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a markdown ``text``'s headings outside fenced code, repeats numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for match in _HEADING.finditer(_FENCE.sub("", text)):
        anchor = heading_anchor(match.group("title"))
        found.add(anchor if anchor not in seen else f"{anchor}-{seen[anchor]}")
        seen[anchor] = seen.get(anchor, 0) + 1
    return found


def broken_links(doc: Path, root: Path = REPO) -> list[str]:
    """The relative links of the markdown file ``doc`` whose file or heading does not exist."""
    text = doc.read_text(encoding="utf-8")
    found = []
    for match in _LINK.finditer(_FENCE.sub("", text)):
        target = match.group("target")
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        if not linked.exists() or root.resolve() not in linked.parents:
            found.append(f"{target}: {path} is not a file of the repository")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text(encoding="utf-8")):
            found.append(f"{target}: {linked.name} has no heading with the anchor #{anchor}")
    return found


@pytest.mark.parametrize("doc", LINKED_DOCS)
def test_doc_links_resolve(doc: str) -> None:
    wrong = broken_links(REPO / doc)
    assert not wrong, f"{doc} has broken links:\n" + "\n".join(wrong)


def test_heading_anchors_follow_github() -> None:
    text = "# The small run\n## Text to avatar (appendix B.5)\n## `rodin edit`: z + s·δ\n## Text to avatar (appendix B.5)\n"
    assert anchors(text) == {"the-small-run", "text-to-avatar-appendix-b5", "rodin-edit-z--sδ",
                             "text-to-avatar-appendix-b5-1"}


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n## Some section\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text("[ok](docs/page.md#some-section) [gone](docs/none.md) [bad anchor](docs/page.md#other) "
                      "[web](https://example.org/x) ![pic](docs/page.md)\n```\n[in code](docs/none.md)\n```\n",
                      encoding="utf-8")
    assert broken_links(readme, tmp_path) == ["docs/none.md: docs/none.md is not a file of the repository",
                                              "docs/page.md#other: page.md has no heading with the anchor #other"]
