"""Test-only ComfyUI custom nodes: a FLUX CLIP with small random encoders of FLUX's widths, and a
FLUX.2 klein CLIP with a small random Qwen3.

A full-size T5-XXL (4.7B parameters) is too heavy for the CPU integration test, so this node
builds the text encoder in the server process: ComfyUI's real FLUX tokenizer (T5 + CLIP-L),
ComfyUI's T5 / CLIP-L modules, one layer each, at the widths FLUX expects (T5 4096, CLIP 768).
Never shipped: the server test points ``extra_model_paths.yaml``'s ``custom_nodes`` here.
"""

import os
import sys

_TESTS = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
if _TESTS not in sys.path:
    sys.path.append(_TESTS)


class RefAMTestTinyFluxCLIP:
    CATEGORY = "RefAM/testing"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "build"
    DESCRIPTION = "Test only: FLUX CLIP with one-layer random T5 (4096) and CLIP-L (768) encoders."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def build(self):
        from comfy_support import tiny_flux_clip

        clip, _ = tiny_flux_clip(seed=0, full_width=True)
        return (clip,)


class RefAMTestTinyKleinCLIP:
    CATEGORY = "RefAM/testing"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "build"
    DESCRIPTION = "Test only: FLUX.2 klein CLIP (ComfyUI's KleinTokenizer) with a small random Qwen3 (28 layers, 64 wide)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def build(self):
        from comfy_support import tiny_klein_clip

        clip, _ = tiny_klein_clip(seed=0)
        return (clip,)


NODE_CLASS_MAPPINGS = {"RefAMTestTinyFluxCLIP": RefAMTestTinyFluxCLIP, "RefAMTestTinyKleinCLIP": RefAMTestTinyKleinCLIP}
