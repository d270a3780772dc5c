"""docs/configuration.md is generated from the settings model and names every variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from authsvc import config_docs
from authsvc.config import groups, variable
from authsvc.config_docs import render

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "configuration.md"
# Everything in the repository that may read or set an AUTHSVC_* variable.
SOURCES = ["src", "scripts", "tests", "bench", "deploy", "examples", "alembic"]
FILES = ["Dockerfile", "docker-compose.yml", "README.md"]
NAME = re.compile(r"\bAUTHSVC_[A-Z0-9]+(?:_[A-Z0-9]+)*\b")


def test_the_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text() == render(), (
        "docs/configuration.md is stale: run python -m authsvc.config_docs"
    )


def test_every_setting_is_described_in_the_reference() -> None:
    text = REFERENCE.read_text()
    for group in groups().values():
        for name, field in group.model_fields.items():
            assert field.description, f"{group.__name__}.{name} needs a description"
            assert f"| `{variable(name)}` |" in text


def test_every_variable_named_in_the_repository_is_in_the_reference() -> None:
    text = REFERENCE.read_text()
    paths = [REPO / name for name in FILES]
    for source in SOURCES:
        paths += [
            p for p in (REPO / source).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ]
    named: dict[str, Path] = {}
    for path in paths:
        try:
            content = path.read_text()
        except UnicodeDecodeError:
            continue
        for match in NAME.findall(content):
            named.setdefault(match, path)
    assert len(named) > 40
    missing = {
        name: str(path.relative_to(REPO)) for name, path in named.items() if f"`{name}`" not in text
    }
    assert not missing, f"not in docs/configuration.md: {missing}"


def test_the_readme_links_the_reference() -> None:
    assert "docs/configuration.md" in (REPO / "README.md").read_text()


def test_an_option_is_never_taken_for_the_file_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_docs.main(["--help"]) == 0
    assert config_docs.main(["--frobnicate"]) == 2
    assert "usage:" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
