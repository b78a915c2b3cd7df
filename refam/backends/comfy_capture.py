"""The expression branch on the user's own ComfyUI MODEL, for every architecture module.

Nothing global is touched. The capture lives on a **clone** of the ModelPatcher
(:meth:`ComfyCapture.patched_model`):

* a ``dit`` replace patch per joint block runs the block (chaining any patch already on that
  key), then one block of the expression branch (:class:`refam.backends.branch.BranchRunner`);
* the image queries/keys/values of the block's real attention call are read through
  ``transformer_options["optimized_attention_override"]`` (ComfyUI >= 0.3.59), chaining any
  override already there and calling what ComfyUI would have called;
* a wrapper at the architecture's pass point resets the per-pass state and learns the token layout.

The pass itself is ComfyUI's: ``CFGGuider`` with cfg 1 (only the positive conditioning runs)
and a one-step sampler at ``σ``, so model loading, lowvram offloading, conditioning processing
and other packs' wrappers behave exactly as in a normal sampling run. What differs between
DiTs (patch keys, where the image tokens sit, the adapters) comes from :mod:`refam.architectures`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from refam.architectures import ComfyBlock, comfy_architecture
from refam.attention import (
    BlockCapture,
    CaptureComplete,
    ExpressionLayout,
    ImageAttention,
    resolve_capture_blocks,
)
from refam.backends.branch import BlockProgress, BranchRunner
from refam.images import to_model_pixels
from refam.noise import capture_noise
from refam.variants import BRANCH_POOLED, check_choice

__all__ = [
    "ComfyCapture",
    "PATCH_KEY",
    "attention_reader",
    "comfy_pixels",
    "denoise_once",
    "positive_rows",
    "preferred_attention",
    "run_patched_pass",
    "supports_attention_override",
]


# The key RefAM's wrappers are registered under on a MODEL clone.
PATCH_KEY = "refam_capture"


def positive_rows(cond_or_uncond: Sequence[int] | None, batch: int) -> torch.Tensor | None:
    """Batch rows that belong to the positive conditioning (ComfyUI stacks cond/uncond chunks)."""
    if not cond_or_uncond or all(c == 0 for c in cond_or_uncond):
        return None
    chunk = batch // len(cond_or_uncond)
    rows = [r for i, c in enumerate(cond_or_uncond) if c == 0 for r in range(i * chunk, (i + 1) * chunk)]
    return torch.tensor(rows, dtype=torch.long)


def _one_step(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """A sampler that only evaluates the denoiser once, at ``sigmas[0]``."""
    return model(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))


def denoise_once(model: Any, latent: torch.Tensor, positive: list, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """One denoiser evaluation at ``σ`` through ComfyUI's own sampling path; returns x̂0 (raw latent)."""
    import comfy.samplers

    guider = comfy.samplers.CFGGuider(model)
    guider.inner_set_conds({"positive": positive})
    guider.set_cfg(1.0)
    sigmas = torch.tensor([float(sigma), 0.0])
    sampler = comfy.samplers.KSAMPLER(_one_step)
    return guider.sample(noise, latent, sampler, sigmas, disable_pbar=True, seed=0)


def comfy_pixels(images: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> ComfyUI's IMAGE layout (float 0..1, ``[B, h, w, 3]``) at the model's
    size. Resized here rather than cropped by the VAE, so every pixel maps back through ImageGeometry."""
    return to_model_pixels(images, size).add_(1.0).mul_(0.5).permute(0, 2, 3, 1)


def run_patched_pass(session: Any, latent: torch.Tensor, positive: list, sigma: float, seed: int) -> None:
    """One pass at ``σ`` of ``session.patched_model()`` on ``latent`` with the shared capture noise;
    the early stop after the last selected block ends it, and the session is released either way."""
    noise = capture_noise(latent.shape, seed).contiguous()
    try:
        with suppress(CaptureComplete):
            denoise_once(session.patched_model(), latent, positive, sigma, noise)
    finally:
        session.release()


def preferred_attention(block: torch.nn.Module) -> Callable | None:
    """The attention function ``block``'s layers ask ComfyUI for, or None for ComfyUI's default.

    Newer cores let a layer carry a preference (a ``ComfyAttention`` module whose ``function`` is,
    e.g., an int8 kernel a quantized checkpoint asked for) and consult an installed override
    *before* it, so an override that only calls ``func`` would silently switch such layers to the
    default attention. Cores without ``ComfyAttention`` have no preferences: None.
    """
    import comfy.ldm.modules.attention as attention

    kind = getattr(attention, "ComfyAttention", None)
    if kind is None:
        return None
    functions = {
        id(m.function): m.function for m in block.modules() if isinstance(m, kind) and m.function is not None
    }
    if len(functions) > 1:
        raise NotImplementedError(
            f"{type(block).__name__} asks for {len(functions)} different attention functions; RefAM cannot tell "
            "which of its attention calls uses which, so it will not run on this checkpoint yet"
        )
    return next(iter(functions.values()), None)


def attention_reader(
    previous: Callable | None,
    keep: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None],
    preferred: Callable | None = None,
):
    """An ``optimized_attention_override`` that calls exactly what ComfyUI would have called
    without it — an override already installed (``previous``), else the layer's ``preferred``
    attention function, else ``func`` — and hands the call's q/k/v and its output to ``keep``.

    It has no ``container_function``, so a core that passes q/k/v in single-owner containers
    unwraps them before calling it, as for any such override; that moves who frees the tensors,
    not the attention's arithmetic.
    """

    def override(func, *args, **kwargs):
        if previous is not None:
            out = previous(func, *args, **kwargs)
        elif preferred is not None:
            out = preferred(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
        keep(*args[:3], out)
        return out

    return override


def supports_attention_override() -> bool:
    """ComfyUI >= 0.3.59 routes every attention call through ``optimized_attention_override``."""
    import comfy.ldm.modules.attention as attention

    return hasattr(attention, "wrap_attn")


@dataclass
class ComfyCapture:
    """The expression branch as patches on a clone of a ComfyUI MODEL of any architecture module.

    ``expression_embeds [1, L, D]`` are the text encoder's outputs (see
    :func:`refam.backends.comfy_text.encode_expressions`); the architecture maps them into the
    text stream as the model does for the caption. The architecture is found from the MODEL (of
    ``modality`` when given), so the one that is checked is the one that runs.
    """

    model: Any
    expression_embeds: torch.Tensor
    layout: ExpressionLayout
    modality: str | None = None
    blocks: Iterable[int | str] | None = None
    stop_after_last: bool = False
    progress: BlockProgress | None = None
    branch_pooled: str = BRANCH_POOLED[0]
    meter: Any = None
    records: list[BlockCapture] = field(default_factory=list)
    # False: the patches only pass through (RF-inversion's steps and denoising steps not collected).
    active: bool = True
    keep_output: bool = False  # keep each pass's raw output for take_output (multi-step sampling)

    def __post_init__(self) -> None:
        self.architecture, self.diffusion_model = comfy_architecture(self.model, self.modality)
        check_choice("branch_pooled", self.branch_pooled, BRANCH_POOLED)
        if not supports_attention_override():
            raise RuntimeError("RefAM needs ComfyUI >= 0.3.59 (optimized_attention_override); update ComfyUI")
        self.joint_blocks = self.architecture.comfy_blocks(self.diffusion_model)
        self.names = [b.name for b in self.joint_blocks]
        self.selected = resolve_capture_blocks(self.blocks, len(self.names), self.names)
        if self.expression_embeds.shape[1] != self.layout.total:
            raise ValueError(
                f"expression embeddings hold {self.expression_embeds.shape[1]} tokens, layout expects {self.layout.total}"
            )
        self.runner = BranchRunner(
            [self.architecture.comfy_adapter(b.name, b.module) for b in self.joint_blocks],
            self.names,
            set(self.selected),
            self.layout,
            stop_after_last=self.stop_after_last,
            progress=self.progress,
            meter=self.meter,
            records=self.records,
        )
        self._preferred = [preferred_attention(b.module) for b in self.joint_blocks]
        self._pass: Any = None
        self._attention: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._outputs: list[torch.Tensor] = []

    def patched_model(self) -> Any:
        """A clone of the MODEL carrying the capture; the original's options are left untouched."""
        from comfy.patcher_extension import WrappersMP

        clone = self.model.clone()
        if self.architecture.comfy_patch == "after_block":
            clone.set_model_patch(self._after_block_patch, "double_block")
        else:
            replace = clone.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
            for index, block in enumerate(self.joint_blocks[: self.runner.last + 1]):
                patch = self._block_patch(index, block, replace.get(block.patch_key))
                clone.set_model_patch_replace(patch, "dit", *block.patch_key)
        clone.add_wrapper_with_key(getattr(WrappersMP, self.architecture.comfy_wrapper), PATCH_KEY, self._on_pass)
        return clone

    def release(self) -> None:
        self._pass, self._attention, self._outputs = None, None, []
        self.runner.release()

    def take_output(self, shape: torch.Size) -> torch.Tensor:
        """The diffusion model's raw output of the one pass since the last call (float32): FLUX's
        velocity, readable also at σ = 0, where ComfyUI's denoised latent no longer holds it."""
        outputs, self._outputs = self._outputs, []
        if len(outputs) != 1 or outputs[0].shape != shape:
            raise RuntimeError(
                f"the denoiser ran the model {len(outputs)} time(s) for one step of shape {tuple(shape)}; RF-inversion "
                "reads one evaluation per step: use a caption conditioning with a single entry (no area or combined "
                "conditionings) and no caching patch (LazyCache, EasyCache) on the MODEL"
            )
        return outputs[0].float()

    def _on_pass(self, executor, *args, **kwargs):
        self._pass, options, batch = self.architecture.comfy_start_pass(
            self.diffusion_model, args, kwargs, self.branch_pooled
        )
        self.runner.start_pass(positive_rows(options.get("cond_or_uncond"), batch))
        if self.architecture.comfy_patch == "after_block" and self.active:
            # No per-block patch wraps the attention call: the reader stays on for the whole pass
            # and each block's patch takes the latest call (the refiners' come before the first).
            reader = attention_reader(options.get("optimized_attention_override"), self._keep, self._preferred[0])
            kwargs = {**kwargs, "transformer_options": {**options, "optimized_attention_override": reader}}
        out = executor(*args, **kwargs)
        if self.keep_output:
            self._outputs.append(out)
        return out

    def _keep(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
        # Only references here: the slicing runs in the branch, where a meter charges it.
        self._attention = (q, k, v, out)

    def _block_patch(self, index: int, block: ComfyBlock, previous: Callable | None):
        def patch(args: dict, extra: dict) -> dict:
            import comfy.model_management

            comfy.model_management.throw_exception_if_processing_interrupted()
            if not self.active:
                return previous(args, extra) if previous is not None else extra["original_block"](args)
            options = dict(args.get("transformer_options") or {})
            options["optimized_attention_override"] = attention_reader(
                options.get("optimized_attention_override"), self._keep, self._preferred[index]
            )
            call_args = {**args, "transformer_options": options}
            out = previous(call_args, extra) if previous is not None else extra["original_block"](call_args)
            self._branch(index, block, args)
            return out

        return patch

    def _after_block_patch(self, args: dict) -> dict:
        """The one patch a model without replace patches calls after each joint block (Z-Image's
        NextDiT: ``patches["double_block"]``); it changes nothing in the block's output."""
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()
        index = args["block_index"]
        if self.active and index <= self.runner.last:
            self._branch(index, self.joint_blocks[index], args)
        return {}

    def _branch(self, index: int, block: ComfyBlock, args: dict) -> None:
        """One block of the expression branch on the attention call just seen."""
        arch = self.architecture
        seen, self._attention = self._attention, None
        if seen is None:
            raise RuntimeError(f"{block.name}: no attention call was seen")
        state = self._pass
        like = arch.comfy_text_like(block, args)

        def embed(batch: int) -> torch.Tensor:
            embeds = self.expression_embeds.to(device=like.device, dtype=like.dtype)
            return arch.comfy_embed(self.diffusion_model, embeds.expand(batch, -1, -1), self.layout)

        def image() -> ImageAttention:
            q, k, v, out = seen
            # The call returns [B, T, H*Dh] (skip_reshape): laid out like v for the architecture.
            out = out.unflatten(-1, (q.shape[1], -1)).transpose(1, 2)
            return arch.comfy_image_attention(block, q, k, v, out, args, state)

        self.runner.run(index, image, arch.comfy_conditioning(args, state), embed)
