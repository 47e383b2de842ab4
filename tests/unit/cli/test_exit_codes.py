"""Exit codes are a contract for scripts and CI: every error exits with a code the README and `--help` document, and
no code means two things (a bare error once exited 1, the code `mesh simulate` uses for "no match")."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import mesh.errors
from mesh.cli import cli

ROOT = Path(__file__).resolve().parents[3]
HELP_CODE = re.compile(r"(?:^|\s{2})(\d{1,3})\s{2,}\S")


def _constants() -> dict[str, int]:
    return {name: value for name, value in vars(mesh.errors).items() if name.startswith("EXIT_")}


def _every_error_class() -> set[type[mesh.errors.MeshError]]:
    """Every MeshError subclass in the package: each module is imported, then the tree is walked."""
    for path in sorted((ROOT / "mesh").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    seen: set[type[mesh.errors.MeshError]] = set()
    todo = [mesh.errors.MeshError]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            todo += cls.__subclasses__()
    return seen


def _readme_table() -> list[int]:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| Code | Meaning |") :].split("\n\n")[0]
    return [int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)]


def _help_codes(*args: str) -> set[int]:
    out = CliRunner().invoke(cli, [*args, "--help"], terminal_width=200)
    assert out.exit_code == 0, out.output
    epilog = out.output[out.output.index("Exit codes:") :]
    return {int(m) for line in epilog.splitlines() for m in HELP_CODE.findall(line)}


def test_no_two_meanings_share_a_code() -> None:
    by_code: dict[int, list[str]] = {}
    for name, code in _constants().items():
        by_code.setdefault(code, []).append(name)
    assert all(len(names) == 1 for names in by_code.values()), by_code
    assert mesh.errors.MeshError.exit_code not in {mesh.errors.EXIT_NO_ROUTE, 0}


def test_the_readme_table_lists_each_code_once_and_only_the_codes_we_exit_with() -> None:
    listed = _readme_table()
    assert len(listed) == len(set(listed)), listed
    assert set(listed) == {0, *_constants().values()}


def _qualified(cls: type[mesh.errors.MeshError]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


ERRORS: list[type[mesh.errors.MeshError]] = sorted(_every_error_class(), key=_qualified)


@pytest.mark.parametrize("cls", ERRORS, ids=_qualified)
def test_every_error_exits_with_a_documented_code(cls: type[mesh.errors.MeshError]) -> None:
    assert cls.exit_code in _readme_table(), f"{cls.__qualname__} exits {cls.exit_code}: add it to README's table"
    assert cls.exit_code in _help_codes() | _help_codes("reconcile"), f"{cls.__qualname__}: add it to an epilog"


def test_help_documents_only_codes_we_exit_with() -> None:
    known = {0, *_constants().values()}
    main, reconcile = _help_codes(), _help_codes("reconcile")
    assert main <= known and reconcile <= known, (main - known, reconcile - known)
    assert main | reconcile == known


def test_the_gitops_doc_lists_the_reconcile_codes() -> None:
    doc = (ROOT / "docs" / "gitops.md").read_text()
    section = doc[doc.index("## Exit codes") :].split("\n## ")[0].split("(Before,")[0]
    assert {int(m) for m in re.findall(r"(?<![\w-])(\d+) [a-z]", section)} == _help_codes("reconcile")
