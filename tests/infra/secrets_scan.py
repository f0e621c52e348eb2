"""Secret-looking assignments in the repository's tracked files (used by test_secrets.py).

An assignment is ``KEY = value``, ``KEY: value``, ``KEY=value`` or ``"key": "value"`` whose key names
a credential (password, secret, token, API or access key, private key, credential). Its value is
allowed when it is empty, a reference resolved elsewhere (``${VAR}``, ``$VAR``, ``{{ ... }}``,
``<placeholder>``, a ``secretKeyRef``) or a clearly test-only value (it says ``test``, ``example``,
``placeholder`` or ``dummy``). In Python files only quoted literals count: code such as
``token = match.group()`` is no credential, and in Markdown only code blocks count. The password of
a URL (``scheme://user:<password>@host``) follows the same rules, and so does a value that names an
environment variable (``SECRET_NAME = "AWS_SECRET_ACCESS_KEY"``).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

SECRET_KEY = re.compile(r"password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential",
                        re.IGNORECASE)
ASSIGNMENT = re.compile(r"""(?P<key>[A-Za-z_][\w.-]*)["']?[ \t]*(?:=|:)[ \t]*(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s#,;)}\]]+)""")
ALLOWED_WORDS = ("test", "example", "placeholder", "dummy")
REFERENCE = re.compile(r"^\$|^\{\{|^<|\$\{|\$\(|^\{?secretKeyRef|^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
URL_PASSWORD = re.compile(r"://[^\s/:@]+:(?P<value>[^\s/@]+)@")
"""The password of a URL such as ``postgresql://user:<password>@host/db``."""
EXPANSION = re.compile(r"\$\{[^}]*\}")
PLANTED = {"tests/infra/test_secrets.py"}
"""Files that hold made-up credentials on purpose: the scanner's own test cases."""
BINARY_SUFFIXES = {".png", ".gif", ".glb", ".jpg", ".jpeg", ".safetensors", ".parquet", ".blend", ".ply"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    key: str
    value: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.key} = {self.value}"


def allowed(value: str) -> bool:
    """Whether an assigned ``value`` is empty, a reference or clearly test-only."""
    bare = value.strip().strip("\"'")
    return (not bare or REFERENCE.search(bare) is not None
            or any(word in bare.lower() for word in ALLOWED_WORDS))


def code_lines(text: str) -> list[str]:
    """The lines of a Markdown ``text`` with everything outside fenced code blocks blanked."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            lines.append("")
        else:
            lines.append(line if fenced else "")
    return lines


def scan_text(text: str, path: str) -> list[Finding]:
    """The secret-looking assignments of one file's ``text`` whose values are not allowed."""
    python = path.endswith(".py")
    found = []
    lines = code_lines(text) if path.endswith(".md") else text.splitlines()
    for number, line in enumerate(lines, 1):
        line = EXPANSION.sub("${}", line)  # what a ${VAR:?message} names is resolved elsewhere
        found.extend(Finding(path, number, "URL password", m.group("value")) for m in URL_PASSWORD.finditer(line)
                     if not allowed(m.group("value")))
        for match in ASSIGNMENT.finditer(line):
            key, value = match.group("key"), match.group("value")
            if not SECRET_KEY.search(key) or (python and value[:1] not in "\"'") or value.startswith("="):
                continue  # not a credential's name, Python code, or a version pin such as tokenizers==0.23.3
            if not allowed(value):
                found.append(Finding(path, number, key, value))
    return found


def tracked_files(repo: Path) -> list[str]:
    """The repository's tracked files (``git ls-files``)."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True)
    return [name for name in listing.stdout.decode().split("\0") if name]


def scan_repo(repo: Path) -> list[Finding]:
    """Every not-allowed secret-looking assignment in the tracked text files of ``repo``."""
    found = []
    for name in tracked_files(repo):
        path = repo / name
        if path.suffix.lower() in BINARY_SUFFIXES or name in PLANTED or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found.extend(scan_text(text, name))
    return found
