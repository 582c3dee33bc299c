"""Packaging: a wheel built from this tree, installed into a fresh virtualenv,
holds everything a project needs at run time (templates, static files,
migrations, py.typed), not only the Python modules.

Works offline: the wheel is built without build isolation (so this
interpreter needs a setuptools that builds wheels: 70.1 or later, or the
``wheel`` package) and installed with ``--no-deps`` into a venv that sees
this interpreter's site-packages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KONG = ROOT / "kong"


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(arg) for arg in args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def expected_files() -> set[str]:
    """Every non-Python file the app ships, relative to the repository root."""
    wanted = {"kong/py.typed", "kong/templates/kong/email/failure.txt", "kong/templates/kong/email/recovery.txt"}
    for folder in ("templates", "static"):
        wanted.update(
            str(path.relative_to(ROOT))
            for path in (KONG / folder).rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )
    wanted.update(str(path.relative_to(ROOT)) for path in (KONG / "migrations").glob("*.py"))
    return wanted


def can_build_wheels() -> bool:
    """Whether setuptools can build a wheel here without fetching anything."""
    probe = "import setuptools\ntry:\n import setuptools.command.bdist_wheel\nexcept ImportError:\n import wheel.bdist_wheel"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clean copy of the source (no build/ or egg-info
    left in the working tree)."""
    if not can_build_wheels():
        pytest.skip("no offline wheel builder: install setuptools>=70.1 (requirements/test.txt)")
    source = tmp_path_factory.mktemp("source")
    for name in ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    shutil.copytree(KONG, source / "kong", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, source)
    (built,) = dist.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kong package directory inside a fresh venv with the wheel installed."""
    env = tmp_path_factory.mktemp("venv")
    venv.create(env, system_site_packages=True, with_pip=False)
    python = env / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel)
    # Run from the venv's own folder so the source tree is not on sys.path.
    location = run(python, "-c", "import kong, os; print(os.path.dirname(kong.__file__))", cwd=env).strip()
    assert Path(location).is_relative_to(env), location
    return Path(location)


def test_the_wheel_contains_templates_static_files_migrations_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = expected_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert "kong/management/commands/check_sites.py" in names
    assert not [name for name in names if name.startswith("tests/")]


def test_the_installed_package_has_every_file_it_needs(installed):
    for relative in sorted(expected_files()):
        path = installed.parent / relative
        assert path.is_file(), f"not installed: {relative}"
    assert (installed / "templates" / "kong" / "base.html").is_file()
    assert (installed / "templates" / "kong" / "email" / "failure.txt").read_text() == (
        KONG / "templates" / "kong" / "email" / "failure.txt"
    ).read_text()


def test_a_new_project_installs_kong_as_the_readme_says(installed, tmp_path):
    """Tried as a new user would: ``pip install``, add "kong" to a fresh
    ``startproject``, then ``migrate``, ``check --database default`` and
    ``check_sites``, each a real process on a fresh SQLite file."""
    python = installed.parents[3] / "bin" / "python"
    # Offline, pip cannot fetch Kong's dependencies: let the new venv see
    # the ones this interpreter has (Django, twill, croniter), as a path
    # entry only, so the installed wheel, not the source tree, is imported.
    deps = sysconfig.get_paths()["purelib"]
    (installed.parent / "zz_kong_test_dependencies.pth").write_text(deps + "\n")
    project = tmp_path / "ops"
    project.mkdir()
    run(python, "-m", "django", "startproject", "fleetops", project, cwd=tmp_path)
    settings = project / "fleetops" / "settings.py"
    settings.write_text(
        re.sub(r"([\"']django\.contrib\.staticfiles[\"'],)", r"\1\n    'kong',", settings.read_text())
        + '\nDATABASES["default"]["OPTIONS"] = {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",'
        ' "transaction_mode": "IMMEDIATE", "timeout": 20}\n'
    )
    urls = project / "fleetops" / "urls.py"
    urls.write_text(
        urls.read_text().replace("from django.urls import path", "from django.urls import include, path")
        .replace("path('admin/', admin.site.urls),", "path('admin/', admin.site.urls),\n    path('kong/', include('kong.urls')),")
        .replace('path("admin/", admin.site.urls),', 'path("admin/", admin.site.urls),\n    path("kong/", include("kong.urls")),')
    )  # fmt: skip

    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), "manage.py", *args], cwd=project, env=env, capture_output=True, text=True, check=False,
            timeout=300,
        )  # fmt: skip

    migrate = manage("migrate", "--no-input")
    assert migrate.returncode == 0, migrate.stderr
    assert "Applying kong.0001_initial" in migrate.stdout
    check = manage("check", "--database", "default")
    assert check.returncode == 0, check.stderr
    assert "kong.W012" not in check.stderr
    assert "kong.W013" not in check.stderr
    first_run = manage("check_sites")
    assert first_run.returncode == 3
    assert first_run.stderr.strip() == "CommandError: nothing to check: no active test applies to a live site"
    assert "Traceback" not in migrate.stderr + check.stderr + first_run.stderr
