"""Build a Python policy plugin into a WebAssembly component.

    berth-plugin-build [DIR] [--module NAME] [--out FILE]

DIR (default: the current directory) holds the plugin's module and its
``pyproject.toml``; ``[tool.berth]`` there may set ``module`` (default: the
project name with ``-`` as ``_``) and ``out`` (default:
``build/<module>.wasm``). The component targets the WIT world this SDK
carries (``berth:policy@0.1.0``), imports nothing from WASI (every WASI call
is stubbed: a plugin gets no filesystem, network, clock or stdio), and has
its interpreter initialised at build time, so a call does not pay Python's
start-up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def settings(project: Path) -> tuple[str, Path]:
    """The module to build and where the component goes."""
    meta: dict = {}
    pyproject = project / "pyproject.toml"
    if pyproject.exists():
        meta = tomllib.loads(pyproject.read_text())
    berth = meta.get("tool", {}).get("berth", {})
    name = meta.get("project", {}).get("name", project.resolve().name)
    module = berth.get("module", name.replace("-", "_"))
    out = project / berth.get("out", f"build/{module}.wasm")
    return module, out


def componentize_py() -> str:
    beside = Path(sys.executable).parent / "componentize-py"
    if beside.exists():
        return str(beside)
    found = shutil.which("componentize-py")
    if not found:
        sys.exit("berth-plugin-build: componentize-py not found (pip install componentize-py)")
    return found


def sources(project: Path) -> list[Path]:
    """What the component is built from: the project's Python files and
    pyproject.toml, this SDK and its WIT."""
    skip = {"build", "target", ".venv", "venv", "__pycache__", ".git"}
    found = [p for p in project.rglob("*.py") if not skip & set(p.relative_to(project).parts)]
    found += [project / "pyproject.toml"] if (project / "pyproject.toml").exists() else []
    found += list(HERE.glob("*.py")) + list((HERE / "wit").glob("*.wit"))
    return found


def stale(project: Path, out: Path) -> bool:
    """Whether a source is newer than the component (or there is none)."""
    if not out.exists():
        return True
    built = out.stat().st_mtime
    return any(p.stat().st_mtime > built for p in sources(project))


def build(project: Path, module: str, out: Path) -> None:
    if not (project / f"{module}.py").exists() and not (project / module).is_dir():
        sys.exit(f"berth-plugin-build: no module {module!r} in {project}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="berth-plugin-build-") as tmp:
        # Only the SDK's own code goes into the component, not whatever else
        # shares its site-packages.
        sdk = Path(tmp) / "sdk"
        shutil.copytree(HERE, sdk / "berth_plugin", ignore=shutil.ignore_patterns("wit", "__pycache__"))
        partial = Path(tmp) / "component.wasm"
        cmd = [
            componentize_py(),
            "--wit-path", str(HERE / "wit"),
            "--world", "plugin",
            "componentize", module,
            "--stub-wasi",
            "--python-path", str(project),
            "--python-path", str(sdk),
            "--output", str(partial),
        ]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            sys.stderr.write(run.stdout + run.stderr)
            sys.exit(f"berth-plugin-build: componentize-py failed for {module} (exit {run.returncode})")
        # Replace the old component only with a whole new one.
        os.replace(partial, out)
    print(f"built {out} ({out.stat().st_size // 1024} KiB)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="berth-plugin-build", description=__doc__.split("\n\n")[0])
    p.add_argument("dir", nargs="?", default=".", type=Path)
    p.add_argument("--module")
    p.add_argument("--out", type=Path)
    p.add_argument("--if-stale", action="store_true", help="build only when a source is newer than the component")
    a = p.parse_args(argv)
    module, out = settings(a.dir)
    module, out = a.module or module, a.out or out
    if a.if_stale and not stale(a.dir, out):
        print(f"{out} is up to date")
        return
    build(a.dir, module, out)


if __name__ == "__main__":
    main()
