"""Links between the repository's own Markdown pages point at pages and headings that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(((?!https?:|mailto:)[^)#\s]*)(?:#([^)\s]+))?\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    for target, anchor in LINK.findall(page.read_text()):
        linked = (page.parent / target).resolve() if target else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: {target}#{anchor}"


# Comments and docs cite the repository's own pages (README, docs/), never a file that only
# exists beside a checkout: a reader of the repository cannot open it.
OUTSIDE = re.compile(
    r"\b(?:API|BENCH|STYLE)\.md\b"  # contract, benchmark and style notes kept outside the repo
    r"|\.\./shared\b|(?<![\w.-])shared[/]|/work[/]"  # the directory beside the checkout
)
# Not a citation: .ci/run runs the CI host's service starter when the host provides one.
ALLOWED = {(".ci/run", "if [ -x ../shared/services.sh ]; then ../shared/services.sh; fi")}
NOT_OURS = {".git", ".venv", ".venv-deploy", "var", "node_modules", "__pycache__", "dist"}
NOT_OURS |= {"build", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}
NOT_OURS |= {"test-artifacts"}


def repository_files() -> list[Path]:
    found = []
    for path in sorted(ROOT.rglob("*")):
        parts = path.relative_to(ROOT).parts
        if path.is_file() and not any(p in NOT_OURS or p.endswith(".egg-info") for p in parts):
            found.append(path)
    # This file names them in order to find them.
    found.remove(Path(__file__).resolve())
    return found


def test_no_file_cites_a_document_outside_the_repository() -> None:
    files = repository_files()
    names = {str(f.relative_to(ROOT)) for f in files}
    assert {"README.md", "Dockerfile", ".ci/run", "src/authsvc/config.py"} <= names
    assert "docs/deployment.md" in names
    cited = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (the gzipped password list)
        rel = str(path.relative_to(ROOT))
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line) and (rel, line.strip()) not in ALLOWED:
                cited.append(f"{rel}:{number}: {line.strip()}")
    assert not cited, "cite README.md or docs/ instead:\n" + "\n".join(cited)


@pytest.mark.parametrize(
    ("line", "cites"),
    [
        ("# A 503 within 5 s (API.md).", True),
        ('"""The password policy of API.md."""', True),
        ("see BENCH.md for the figures", True),
        ("STYLE.md, convention 5", True),
        ("(started by shared/services.sh)", True),
        ("../shared/API.md", True),
        ("/work/shared/services.sh", True),
        ("# A 503 within 5 s (README, *Configuration*).", False),
        ("see docs/deployment.md#benchmark-figures", False),
        ("a shared secret; shared state in Redis", False),
        ("/usr/share/doc and not_shared/x", False),
    ],
)
def test_the_citation_check_tells_outside_files_from_ours(line: str, cites: bool) -> None:
    assert bool(OUTSIDE.search(line)) is cites
