"""RefAM capture on a ComfyUI Mochi ``MODEL`` (``comfy.ldm.genmo`` ``AsymmDiTJoint``).

As for FLUX (:mod:`refam.backends.comfy_flux`), everything lives on a clone of the MODEL: a
``dit`` replace patch per ``AsymmetricJointBlock`` (chaining any patch already there) runs the
block and then one block of the expression branch; the visual q/k/v — the first ``N`` tokens of
the joint attention call, RoPE already applied — come through ``optimized_attention_override``.
Mochi has no diffusion-model wrapper in ComfyUI, so an ``APPLY_MODEL`` wrapper starts each pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from refam.attention import (
    BlockCapture,
    CapturedAttention,
    ExpressionLayout,
    ImageAttention,
    ImageGeometry,
    resolve_capture_blocks,
)
from refam.backends.branch import BranchRunner
from refam.backends.comfy_capture import (
    PATCH_KEY,
    attention_reader,
    comfy_pixels,
    positive_rows,
    preferred_attention,
    run_patched_pass,
)
from refam.backends.mochi_layout import mochi_rope, pad_clip, per_latent_frame, valid_latent_frames
from refam.expression import TokenizedExpression
from refam.images import model_size
from refam.noise import check_sigma
from refam.operating_point import MOCHI_VIDEO

__all__ = ["ComfyMochiAdapter", "ComfyMochiCapture", "capture_mochi", "mochi_diffusion_model"]

BlockProgress = Callable[[int, int], None]


def mochi_diffusion_model(model: Any) -> torch.nn.Module:
    """The ``AsymmDiTJoint`` inside a MODEL, or a TypeError naming what was found."""
    from comfy.ldm.genmo.joint_model.asymm_models_joint import AsymmDiTJoint

    inner = getattr(getattr(model, "model", None), "diffusion_model", None)
    if not isinstance(inner, AsymmDiTJoint):
        found = type(inner).__name__ if inner is not None else type(model).__name__
        raise TypeError(
            f"RefAM's Mochi capture needs a Mochi MODEL (comfy.ldm.genmo AsymmDiTJoint, mochi_preview); got {found}"
        )
    return inner


class ComfyMochiAdapter:
    """Text-stream pieces of ComfyUI's Mochi ``AsymmetricJointBlock`` (text width != visual width)."""

    kind = "mochi"

    def __init__(self, block: torch.nn.Module) -> None:
        self.block = block

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        from comfy.ldm.genmo.joint_model.asymm_models_joint import modulated_rmsnorm

        block, attn = self.block, self.block.attn
        mod_y = block.mod_y(F.silu(vec))
        if block.update_y:
            scale_msa, gate_msa, scale_mlp, gate_mlp = mod_y.chunk(4, dim=1)
            state = (gate_msa, scale_mlp, gate_mlp)
        else:
            scale_msa, state = mod_y, None
        y = modulated_rmsnorm(expr, scale_msa)
        q, k, v = attn.qkv_y(y).view(y.shape[0], y.shape[1], 3, attn.num_heads, -1).unbind(2)
        q, k = attn.q_norm_y(q), attn.k_norm_y(k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), state

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        from comfy.ldm.genmo.joint_model.asymm_models_joint import residual_tanh_gated_rmsnorm

        if state is None:  # the last block leaves the text as it is
            return expr
        gate_msa, scale_mlp, gate_mlp = state
        block = self.block
        y = residual_tanh_gated_rmsnorm(expr, block.attn.proj_y(attn_out.to(expr.dtype)), gate_msa)
        return block.ff_block_y(y, scale_mlp, gate_mlp)


@dataclass
class ComfyMochiCapture:
    """The expression branch as patches on a clone of a ComfyUI Mochi MODEL.

    ``expression_embeds [1, L, 4096]`` are T5 outputs; the model's ``t5_yproj`` maps them into
    the text stream, as it does for the caption.
    """

    model: Any
    expression_embeds: torch.Tensor
    layout: ExpressionLayout
    blocks: Iterable[int | str] | None = None
    stop_after_last: bool = False
    progress: BlockProgress | None = None
    records: list[BlockCapture] = field(default_factory=list)

    def __post_init__(self) -> None:
        from refam.backends.comfy_flux import supports_attention_override

        self.diffusion_model = mochi_diffusion_model(self.model)
        if not supports_attention_override():
            raise RuntimeError("RefAM's Mochi capture needs ComfyUI >= 0.3.59 (optimized_attention_override)")
        self.names = [f"mochi.{i}" for i in range(len(self.diffusion_model.blocks))]
        self.selected = resolve_capture_blocks(self.blocks, len(self.names), self.names)
        if self.expression_embeds.shape[1] != self.layout.total:
            raise ValueError(
                f"expression embeddings hold {self.expression_embeds.shape[1]} tokens, layout expects {self.layout.total}"
            )
        self.runner = BranchRunner(
            [ComfyMochiAdapter(b) for b in self.diffusion_model.blocks],
            self.names,
            set(self.selected),
            self.layout,
            stop_after_last=self.stop_after_last,
            progress=self.progress,
            records=self.records,
        )
        self._preferred = [preferred_attention(b) for b in self.diffusion_model.blocks]
        self._visual = 0
        self._image: ImageAttention | None = None

    def patched_model(self) -> Any:
        """A clone of the MODEL carrying the capture; the original's options are left untouched."""
        from comfy.patcher_extension import WrappersMP

        clone = self.model.clone()
        replace = clone.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
        for index in range(self.runner.last + 1):
            key = ("double_block", index)
            clone.set_model_patch_replace(self._block_patch(index, replace.get(key)), "dit", *key)
        clone.add_wrapper_with_key(WrappersMP.APPLY_MODEL, PATCH_KEY, self._on_apply)
        return clone

    def release(self) -> None:
        self._image = None
        self.runner.release()

    def _on_apply(self, executor, *args, **kwargs):
        x = args[0]
        options = args[5] if len(args) > 5 else kwargs.get("transformer_options", {})
        patch = self.diffusion_model.patch_size
        t, h, w = x.shape[-3:]
        self._visual = t * (h // patch) * (w // patch)
        self.runner.start_pass(positive_rows(options.get("cond_or_uncond"), x.shape[0]))
        return executor(*args, **kwargs)

    def _block_patch(self, index: int, previous: Callable | None):
        rotation: dict[str, torch.Tensor | None] = {}

        def keep(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
            n = self._visual
            q_x = q[:, :, :n]
            cos, sin = rotation.get("cos"), rotation.get("sin")
            # The visual queries before RoPE (ConceptAttention's vectors): the rotation undone.
            q_plain = q_x if cos is None else mochi_rope(q_x.transpose(1, 2), cos, -sin).transpose(1, 2)
            self._image = ImageAttention(q_x, k[:, :, :n], v[:, :, :n], q_plain)

        def patch(args: dict, extra: dict) -> dict:
            import comfy.model_management

            comfy.model_management.throw_exception_if_processing_interrupted()
            rotation.update(cos=args.get("rope_cos"), sin=args.get("rope_sin"))
            options = dict(args.get("transformer_options") or {})
            options["optimized_attention_override"] = attention_reader(
                options.get("optimized_attention_override"), keep, self._preferred[index]
            )
            call_args = {**args, "transformer_options": options}
            out = previous(call_args, extra) if previous is not None else extra["original_block"](call_args)
            image, self._image = self._image, None
            if image is None:
                raise RuntimeError(f"{self.names[index]}: no attention call was seen")
            like = args["txt"]

            def embed(batch: int) -> torch.Tensor:
                embeds = self.expression_embeds.to(device=like.device, dtype=like.dtype)
                return self.diffusion_model.t5_yproj(embeds.expand(batch, -1, -1))

            self.runner.run(index, image, args["vec"], embed)
            return out

        return patch


@torch.no_grad()
def capture_mochi(
    model: Any,
    vae: Any,
    frames: np.ndarray,
    positive: list,
    expression_embeds: torch.Tensor,
    layout: ExpressionLayout,
    expressions: Sequence[TokenizedExpression],
    *,
    sigma: float = MOCHI_VIDEO.sigma,
    seed: int = 0,
    blocks: Iterable[int | str] | None = None,
    resolution: int | None = MOCHI_VIDEO.resolution,
    progress: BlockProgress | None = None,
    latent: torch.Tensor | None = None,
) -> CapturedAttention:
    """One Mochi pass at ``σ`` on a clip ``[T, H, W, 3]`` uint8; one capture image per latent frame.

    ``latent`` (raw VAE latent ``[1, 12, T', h, w]``) skips the VAE, e.g. when the caller has it.
    """
    check_sigma(sigma)
    session = ComfyMochiCapture(model, expression_embeds, layout, blocks=blocks, stop_after_last=True, progress=progress)
    n, height, width = frames.shape[:3]
    patch = session.diffusion_model.patch_size
    size = model_size((height, width), resolution, 8 * patch)
    if latent is not None:
        size = (latent.shape[3] * 8, latent.shape[4] * 8)  # the size the given latent was encoded at
    else:
        latent = vae.encode(comfy_pixels(pad_clip(frames), size))
    latent = latent.float()
    run_patched_pass(session, latent, positive, sigma, seed)
    t_lat = latent.shape[2]
    grid = (latent.shape[3] // patch, latent.shape[4] // patch)
    return CapturedAttention(
        blocks=per_latent_frame(session.records, t_lat, keep=min(t_lat, valid_latent_frames(n))),
        expressions=list(expressions),
        layout=layout,
        geometry=ImageGeometry(original_size=(height, width), model_size=size, grid=grid),
        num_blocks=len(session.names),
        meta={"backend": "comfy-mochi", "sigma": sigma, "seed": seed, "frames": n},
    )
