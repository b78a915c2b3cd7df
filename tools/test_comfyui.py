"""Run the ComfyUI integration tests against real ComfyUI trees, each in the environment it needs.

    python tools/test_comfyui.py [TREE ...]        (default: every tree in ../shared/comfyui)

A tree with a lock file beside it (``<tree>.requirements.txt``, the packaged January-2026 core)
gets its own virtual environment in ``.venv-comfyui/<tree>``: the registry's torch + torchvision,
the lock, this project without dependencies (the lock holds them) and playwright. Any other tree
(upstream ComfyUI) has its ``requirements.txt`` installed into the running environment, minus
torch / torchvision / torchaudio (already here; torchaudio has no build for the current torch),
plus ``requests`` (its server imports it) and playwright. Then every ``comfyui``-marked test runs
with ``COMFYUI_PATH`` at the tree, which is only read: bytecode is not written into it, and the
server tests keep ComfyUI's writes in a scratch folder.

The output ends with one line per tree, ``comfyui <tree>: N passed, M failed, K skipped``. The exit
status is non-zero when a tree has a failure or an error, or — with ``REFAM_COMFYUI_NO_SKIPS=1``,
as CI sets it — a skipped test.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refam.install_hints import requirement_name  # noqa: E402

TREES = ROOT.parent / "shared" / "comfyui"
VENVS = ROOT / ".venv-comfyui"
NOT_FROM_TREE = {"torch", "torchvision", "torchaudio"}
EXTRA = ["requests", "playwright"]


def _run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def _pip(python: str, *args: str, env: dict[str, str] | None = None) -> None:
    _run([python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off", *args], env=env)


def _own_venv(tree: Path, lock: Path) -> str:
    """The tree's own environment, rebuilt only when its lock changed."""
    venv = VENVS / tree.name
    python = str(venv / "bin" / "python")
    stamp = venv / "refam-lock.sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest and Path(python).is_file():
        print(f"{tree.name}: reusing {venv}", flush=True)
        return python
    _run([sys.executable, "-m", "venv", "--clear", str(venv)])
    _pip(python, "-U", "pip", "setuptools", "wheel", "torch", "torchvision")
    build_env = {**os.environ, "SAM2_BUILD_CUDA": "0"}  # sam2 without a CUDA toolchain
    _pip(python, "--no-build-isolation", "-r", str(lock), env=build_env)
    _pip(python, "--no-deps", "--no-build-isolation", "-e", str(ROOT))
    _pip(python, *EXTRA)
    stamp.write_text(digest)
    return python


def _this_venv(tree: Path) -> str:
    lines = (tree / "requirements.txt").read_text().splitlines()
    wanted = [line.strip() for line in lines if requirement_name(line) not in (None, *NOT_FROM_TREE)]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(wanted + EXTRA) + "\n")
    try:
        _pip(sys.executable, "-r", handle.name)
    finally:
        os.unlink(handle.name)
    return sys.executable


def environment_for(tree: Path) -> str:
    lock = tree.parent / f"{tree.name}.requirements.txt"
    return _own_venv(tree, lock) if lock.is_file() else _this_venv(tree)


def run_tree(tree: Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) of the ComfyUI tests on ``tree``; an install failure counts as one failure."""
    started = time.time()
    try:
        python = environment_for(tree)
    except subprocess.CalledProcessError as exc:
        print(f"comfyui {tree.name}: could not build its environment ({exc})", flush=True)
        return 0, 1, 0
    print(f"{tree.name}: environment ready in {time.time() - started:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "junit.xml"
        env = {**os.environ, "COMFYUI_PATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [python, "-m", "pytest", "-q", "-rs", "-s", "-m", "comfyui", "-p", "no:cacheprovider",
               f"--junitxml={report}", "tests"]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, env=env)
        if not report.is_file():
            return 0, 1, 0
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        tests, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    print(f"{tree.name}: tests ran in {time.time() - started:.0f} s (environment included)", flush=True)
    return tests - failures - errors - skipped, failures + errors, skipped


def main(argv: list[str]) -> int:
    trees = [Path(a).resolve() for a in argv] or sorted(
        p for p in TREES.iterdir() if (p / "comfy" / "model_patcher.py").is_file()
    )
    if not trees:
        print(f"no ComfyUI trees in {TREES}", flush=True)
        return 1
    results = {tree.name: run_tree(tree) for tree in trees}
    no_skips = os.environ.get("REFAM_COMFYUI_NO_SKIPS") == "1"
    bad = False
    for name, (passed, failed, skipped) in results.items():
        bad |= failed > 0 or passed == 0 or (no_skips and skipped > 0)
        print(f"comfyui {name}: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
