"""The layers of DESIGN.md §3, as import-linter contracts in pyproject.toml: a new import that breaks one fails
the suite, not a review."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; c()"]


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    # A process of its own: the contracts read the packages found on its path, not the ones loaded here.
    return subprocess.run(
        [*LINT_IMPORTS, "--config", str(cwd / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_code_keeps_its_import_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _fake_project(tmp_path: Path, imports: dict[str, str]) -> Path:
    """A tree with the hub's top-level packages, each importing what ``imports`` says, and our pyproject.toml."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for package in ("config", "fhir_bridge", "notifications", "referrals", "network"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "module.py").write_text(imports.get(package, ""))
    return tmp_path


def test_network_importing_referrals_breaks_the_layers(tmp_path):
    result = lint_imports(_fake_project(tmp_path, {"network": "import referrals.module\n"}))
    assert result.returncode == 1
    assert "Edges above the domain, referrals above network BROKEN" in result.stdout
    assert "network.module -> referrals.module" in result.stdout


def test_the_domain_importing_the_fhir_bridge_is_forbidden(tmp_path):
    result = lint_imports(_fake_project(tmp_path, {"referrals": "from fhir_bridge import module\n"}))
    assert result.returncode == 1
    assert "The domain knows nothing of FHIR or notifications BROKEN" in result.stdout


def test_an_edge_may_import_the_domain(tmp_path):
    result = lint_imports(_fake_project(tmp_path, {"fhir_bridge": "import referrals.module\nimport network.module\n"}))
    assert result.returncode == 0, result.stdout + result.stderr
