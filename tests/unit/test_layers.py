"""The layers hold: routes -> services -> repositories -> models, with security, errors and
schemas as leaves; no import runs back up, and no route module imports another (what routes
share lives in api/deps.py, api/security.py, api/cookies.py).

Read from the source with ``ast``, so imports inside functions and under ``TYPE_CHECKING``
count too.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted((SRC / "authsvc").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str) -> set[str]:
    """The ``authsvc`` modules that module ``name`` imports, as dotted names."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imports_in(path.read_text(), package=package)


def imports_in(source: str, *, package: str) -> set[str]:
    """The ``authsvc`` modules ``source`` imports, relative imports read from ``package``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from authsvc.api.routes import auth` imports the module auth.
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules() else base)
    return {m for m in found if m == "authsvc" or m.startswith("authsvc.")}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# (importer, what it must not import, why)
RULES = [
    ("authsvc.services", ["authsvc.api", "authsvc.main", "authsvc.cli"], "services know no HTTP"),
    (
        "authsvc.repositories",
        ["authsvc.api", "authsvc.services", "authsvc.main", "authsvc.cli"],
        "repositories sit below the services",
    ),
    *(
        (
            leaf,
            ["authsvc.api", "authsvc.services", "authsvc.repositories", "authsvc.main"],
            "a leaf every layer may use",
        )
        for leaf in ("authsvc.models", "authsvc.db", "authsvc.security", "authsvc.errors")
    ),
    *(
        (
            leaf,
            ["authsvc.api", "authsvc.services", "authsvc.repositories", "authsvc.models"],
            "a leaf every layer may use",
        )
        for leaf in ("authsvc.schemas", "authsvc.config")
    ),
]


@pytest.mark.parametrize(("importer", "forbidden", "why"), RULES, ids=[r[0] for r in RULES])
def test_no_import_runs_back_up(importer: str, forbidden: list[str], why: str) -> None:
    checked = [name for name in modules() if within(name, importer)]
    assert checked, f"no module in {importer}"
    wrong = sorted(
        f"{name} imports {target}"
        for name in checked
        for target in imports_of(name)
        if any(within(target, f) for f in forbidden)
    )
    assert not wrong, f"{importer}: {why}; {wrong}"


def test_no_route_module_imports_another() -> None:
    routes = [name for name in modules() if within(name, "authsvc.api.routes")]
    assert len(routes) > 5
    wrong = sorted(
        f"{name} imports {target} (share it through api/deps.py, security.py or cookies.py)"
        for name in routes
        for target in imports_of(name)
        if within(target, "authsvc.api.routes") and target != name
    )
    assert not wrong, wrong


def test_the_import_reader_sees_every_kind_of_import() -> None:
    source = """
import authsvc.api.deps
from authsvc.api.routes import auth, router_helpers
from . import sessions
from ..security import AccessClaims
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from authsvc.services.users import UserAdminService

def lazy():
    from authsvc.cli import app
"""
    assert imports_in(source, package="authsvc.api.routes") == {
        "authsvc.api.deps",
        "authsvc.api.routes.auth",
        "authsvc.api.routes",  # router_helpers is no module: the package is what is imported
        "authsvc.api.routes.sessions",
        "authsvc.api.security",
        "authsvc.services.users",
        "authsvc.cli",
    }
    assert within("authsvc.api.routes.auth", "authsvc.api")
    assert not within("authsvc.apis", "authsvc.api")
