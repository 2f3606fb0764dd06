"""The gateway as a package: the wheel (built directly, and through an sdist) carries its data, and runs installed.

The wheel is built offline (--no-build-isolation, with the setuptools of the interpreter running the tests, see the
test extra) from a copy of the checkout's files, so the build's scratch folders stay out of the repository. The
installed gateway runs from a fresh virtual environment outside the checkout, the wheel installed without its
dependencies; a .pth file names this interpreter's site-packages for them. A .pth line only adds a folder to
sys.path, it does not run that folder's .pth files, so the editable install's finder there cannot shadow the wheel.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, GatewayProcess, make_event

DIST_INFO = "clicktrail-0.1.0.dist-info"
#: What the wheel must carry, by folder in the wheel: the repository folder and the files of it that ship.
SHIPPED = {
    "gateway/_data/schemas": (ROOT / "schemas", ["*.schema.json", "events/*.schema.json", "openapi.json"]),
    "gateway/_data/migrations": (ROOT / "clickhouse" / "migrations", ["*.sql"]),
    "gateway/_data/views": (ROOT / "clickhouse" / "views", ["*.sql"]),
    "gateway/_data/sdk": (ROOT / "sdk_js" / "dist", ["*"]),
    "gateway/_data/dashboard": (ROOT / "dashboard" / "dist", ["*"]),
}


def run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def copy_checkout(target: Path) -> None:
    """The files git tracks or would track (new ones too), symlinks kept as symlinks."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for name in filter(None, listed.split("\0")):
        source, copy = ROOT / name, target / name
        if not source.is_symlink() and not source.is_file():
            continue  # deleted in the working tree
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            copy.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, copy)


def pip_wheel(source: Path, out: Path) -> Path:
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
        "--no-build-isolation", "--no-index", "-w", out, source, cwd=source)
    (wheel,) = out.glob("clicktrail-*.whl")
    return wheel


def contents(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            assert stat.S_IFMT(info.external_attr >> 16) in (0, stat.S_IFREG), f"{info.filename} is not a file"
        return {name: z.read(name) for name in z.namelist() if not name.startswith(DIST_INFO)}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip install .` builds; the one `python -m build` makes through an sdist must be the same."""
    base = tmp_path_factory.mktemp("build")
    copy_checkout(base / "src")
    direct = pip_wheel(base / "src", base / "direct")

    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    sdist = base / "sdist" / run(sys.executable, "-c", code, base / "sdist", cwd=base / "src").split()[-1]
    with tarfile.open(sdist) as tar:
        links = [m.name for m in tar.getmembers() if not (m.isfile() or m.isdir())]
        assert not links, f"the sdist has links: {links}"
        tar.extractall(base / "unpacked", filter="data")
    (unpacked,) = (base / "unpacked").iterdir()
    via_sdist = pip_wheel(unpacked, base / "via_sdist")

    assert contents(via_sdist) == contents(direct)
    return direct


def test_wheel_carries_the_data_and_nothing_else(wheel: Path) -> None:
    files = contents(wheel)
    assert {name.split("/")[0] for name in files} == {"gateway"}  # no tests/, loadtests/, sdk_py/, ...
    assert not [n for n in files if "node_modules" in n or "/vectors/" in n or "__pycache__" in n]
    assert files["gateway/demo.html"] == (ROOT / "gateway" / "demo.html").read_bytes()
    assert "gateway/__main__.py" in files
    for folder, (source, patterns) in SHIPPED.items():
        expected = sorted({p for pattern in patterns for p in source.glob(pattern) if p.is_file()})
        assert expected, f"nothing to ship in {source}"
        for path in expected:
            name = f"{folder}/{path.relative_to(source).as_posix()}"
            assert files.get(name) == path.read_bytes(), f"{name} is missing or differs from {path}"


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh environment outside the checkout holding the wheel; the dependencies come from this interpreter's."""
    base = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", base / "env", cwd=base)
    python = base / "env" / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=base).strip()
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site) / "clicktrail_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--no-index", wheel, cwd=base)
    yield python


def test_installed_gateway_is_the_wheel(venv: Path) -> None:
    env = venv.parent.parent
    code = ("import gateway.app, gateway.ingest.contract, gateway.warehouse.store as s; "
            "print(gateway.app.__file__, s.MIGRATIONS)")
    module, migrations = map(Path, run(venv, "-c", code, cwd=env.parent).split())
    assert module.is_relative_to(env), module
    assert migrations.is_relative_to(env) and not migrations.is_symlink() and any(migrations.glob("*.sql"))


def test_installed_gateway_serves(venv: Path) -> None:
    base = venv.parent.parent.parent
    gw = GatewayProcess(base / "gw", python=str(venv), cwd=base)
    try:
        gw.start()
        event = make_event()
        response = gw.send([event])
        assert response.status_code == 200 and response.json()["accepted"] == 1, response.text
        sql = f"SELECT count() FROM clicktrail.events WHERE event_id = '{event['event_id']}'"
        assert gw.wait_for(sql, 1) == 1

        sdk = gw.http.get("/sdk/clicktrail.min.js")
        assert sdk.status_code == 200
        assert sdk.content == (ROOT / "sdk_js" / "dist" / "clicktrail.min.js").read_bytes()
        page = gw.http.get("/")
        assert page.status_code == 200 and "wk_a" in page.text  # the first site's write key, filled in
    finally:
        if gw.proc is not None:
            gw.stop()
