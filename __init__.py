"""ComfyUI-RefAM: zero-shot referring segmentation from FLUX attention + SAM/SAM2.

ComfyUI loads this file as a custom node pack; everything heavy is imported when ComfyUI asks
for the nodes, never at import time. The library lives in ``refam/`` and runs without ComfyUI.
"""

import os
import sys

# The library sits next to this file; make ``import refam`` work however ComfyUI names the pack.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)


async def comfy_entrypoint():
    from .nodes.extension import comfy_entrypoint as entrypoint

    return await entrypoint()


__all__ = ["comfy_entrypoint"]
