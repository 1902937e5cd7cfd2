"""The migrations ship inside the wheel: `authsidecar migrate` works from an installed wheel, away from the
source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.e2e.conftest import clean_env

ROOT = Path(__file__).resolve().parents[2]


def test_migrate_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--quiet", "-w", str(wheels)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = wheels.glob("authsidecar-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "authsidecar/migrations/env.py" in names
    assert any(n.startswith("authsidecar/migrations/versions/0001") for n in names)

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    program = (
        "import sys, authsidecar, authsidecar.storage.migrate as m; "
        f"assert authsidecar.__file__.startswith({str(target)!r}), authsidecar.__file__; "
        f"assert str(m.migrations_dir()).startswith({str(target)!r}); "
        "from authsidecar.cli import main; sys.exit(main(['migrate']))"
    )
    env = {**clean_env(), "PYTHONPATH": str(target), "AUTHSIDECAR_SQLITE_PATH": str(work / "wheel.db")}
    env.pop("PYTHONSAFEPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=work, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (work / "wheel.db").stat().st_size > 0
    assert os.fspath(ROOT) not in result.stderr
