"""Turn the browser check's screenshots into the workflows' template-browser thumbnails.

``tests/nodes/test_comfy_server.py::test_ui_workflows_load_in_the_browser`` saves each workflow as the
frontend opens it (fit to a 1600x900 window, cut to its groups) in ``test-artifacts/``; this
writes ``example_workflows/<name>.jpg`` from them. Run: ``python tools/workflow_thumbnails.py [ARTIFACTS]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 960


def main(artifacts: Path) -> None:
    workflows = sorted((ROOT / "example_workflows").glob("*.json"))
    missing = [w.stem for w in workflows if not (artifacts / f"{w.stem}.png").is_file()]
    if missing:
        raise SystemExit(f"no screenshot in {artifacts} for {', '.join(missing)}: run the browser check first")
    for workflow in workflows:
        shot = Image.open(artifacts / f"{workflow.stem}.png").convert("RGB")
        height = round(shot.height * WIDTH / shot.width)
        shot.resize((WIDTH, height), Image.LANCZOS).save(workflow.with_suffix(".jpg"), quality=85, optimize=True)
        print(f"{workflow.with_suffix('.jpg').name}: {WIDTH}x{height}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "test-artifacts")
