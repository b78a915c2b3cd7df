"""RefAM: zero-shot referring segmentation from diffusion-transformer attention.

The data flows one way: expression -> capture -> heatmap -> point -> mask.
Importing this package never imports ComfyUI, diffusers or a segmenter backend.
"""

__version__ = "0.1.0"
