"""The built wheel carries the migrations and the dashboard's assets, and works outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_carries_the_migrations_and_migrates_outside_the_checkout(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", str(ROOT), "-w", str(tmp_path / "dist")], check=True)
    (wheel,) = (tmp_path / "dist").glob("gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    versions = (ROOT / "migrations" / "versions").glob("*.py")
    revisions = {f"gateway/_migrations/versions/{p.name}" for p in versions}
    assert revisions and revisions <= names
    assert {"gateway/_migrations/env.py", "gateway/_migrations/script.py.mako"} <= names
    # The dashboard's assets ship inside the package (served offline, no CDN).
    assets = {f"gateway/ui/static/{p.name}" for p in (ROOT / "gateway" / "ui" / "static").iterdir()}
    assert {"gateway/ui/static/dashboard.js", "gateway/ui/static/dashboard.css"} <= assets <= names
    assert {"gateway/encodings/o200k_base.tiktoken.gz", "gateway/encodings/cl100k_base.tiktoken.gz"} <= names
    assert "gateway/prices_snapshot.json" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith((".db", ".pyc"))]

    # Install only the gateway (its dependencies come from this environment) and run it from elsewhere.
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = str(target)
    database = tmp_path / "fresh.db"
    script = (
        "import gateway, sys; from gateway.ui.routes import asset; assert asset('dashboard.js'); "
        "from gateway.price_snapshot import LIBRARY, PriceSnapshot; "
        "assert PriceSnapshot().lookup('gpt-4o') != LIBRARY; "  # the wheel's price snapshot is in use
        "from gateway.cli import main; print(gateway.__file__); sys.exit(main())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "migrate", "--database-url", f"sqlite+aiosqlite:///{database}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(target / "gateway")), result.stdout
    assert "database at revision" in result.stdout and "None" not in result.stdout
    assert database.stat().st_size > 0
