"""RefAM capture on a diffusers ``MochiTransformer3DModel`` (video).

Mochi is asymmetric: visual tokens come first, text has its own narrower width (1536 vs 3072)
and projects up to the visual width inside attention, RoPE rotates visual q/k only, and the last
block does not update the text. The expression branch runs the text-stream weights exactly like
that (``refam.attention`` does the math); the visual q/k/v are read by hooks on the attention's
own ``norm_q`` / ``norm_k`` / ``to_v`` and rotated with the block's RoPE.

Video -> heatmaps: see :mod:`refam.backends.mochi_layout` (one capture image per latent frame).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from refam.attention import (
    CaptureComplete,
    CapturedAttention,
    ExpressionLayout,
    ImageAttention,
    ImageGeometry,
    pack_expressions,
    resolve_capture_blocks,
)
from refam.backends.branch import BranchRunner, installed
from refam.backends.mochi_layout import (
    mochi_rope,
    mochi_timestep,
    pad_clip,
    per_latent_frame,
    valid_latent_frames,
)
from refam.expression import TokenizedExpression
from refam.images import model_size, to_model_pixels
from refam.noise import capture_noise, check_sigma
from refam.operating_point import FROM_BACKEND, MOCHI_VIDEO, FromBackend, OperatingPoint

__all__ = [
    "DiffusersMochi",
    "DiffusersMochiAdapter",
    "MochiCapture",
    "capture_mochi_attention",
    "check_mochi",
]


class DiffusersMochiAdapter:
    """Text-stream pieces of a diffusers ``MochiTransformerBlock``."""

    kind = "mochi"

    def __init__(self, block: nn.Module) -> None:
        self.block = block

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        block, attn = self.block, self.block.attn1
        if block.context_pre_only:
            normed, state = block.norm1_context(expr, vec), None
        else:
            normed, gate_msa, scale_mlp, gate_mlp = block.norm1_context(expr, vec)
            state = (gate_msa, scale_mlp, gate_mlp)
        q = attn.norm_added_q(attn.add_q_proj(normed).unflatten(2, (attn.heads, -1)))
        k = attn.norm_added_k(attn.add_k_proj(normed).unflatten(2, (attn.heads, -1)))
        v = attn.add_v_proj(normed).unflatten(2, (attn.heads, -1))
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), state

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        if state is None:  # Mochi's last block leaves the text as it is
            return expr
        gate_msa, scale_mlp, gate_mlp = state
        block = self.block
        out = block.attn1.to_add_out(attn_out.to(expr.dtype))
        expr = expr + block.norm2_context(out, torch.tanh(gate_msa).unsqueeze(1))
        normed = block.norm3_context(expr, 1 + scale_mlp.unsqueeze(1).to(torch.float32))
        return expr + block.norm4_context(block.ff_context(normed), torch.tanh(gate_mlp).unsqueeze(1))


def check_mochi(transformer: nn.Module) -> None:
    """TypeError naming the class unless ``transformer`` is a diffusers Mochi transformer."""
    blocks = getattr(transformer, "transformer_blocks", None)
    if not hasattr(transformer, "time_embed") or not blocks or not hasattr(blocks[0], "norm1_context"):
        raise TypeError(
            f"RefAM's Mochi capture needs a diffusers MochiTransformer3DModel, got {type(transformer).__name__}"
        )


@dataclass
class _Slots:
    q: torch.Tensor | None = None
    k: torch.Tensor | None = None
    v: torch.Tensor | None = None


class MochiCapture:
    """State of one capture: the expression stream between blocks and the records taken.

    ``expression_embeds`` are T5 outputs ``[1, L, 4096]``; the model's ``caption_proj`` maps them
    into the text stream, as it does for the caption.
    """

    def __init__(
        self,
        transformer: nn.Module,
        expression_embeds: torch.Tensor,
        layout: ExpressionLayout,
        *,
        blocks: Iterable[int | str] | None = None,
        stop_after_last: bool = False,
    ) -> None:
        check_mochi(transformer)
        self.transformer = transformer
        self.names = [f"mochi.{i}" for i in range(len(transformer.transformer_blocks))]
        self.selected = set(resolve_capture_blocks(blocks, len(self.names), self.names))
        self.last = max(self.selected)
        self.expression_embeds = expression_embeds
        self._slots = [_Slots() for _ in self.names]
        adapters = [DiffusersMochiAdapter(b) for b in transformer.transformer_blocks]
        self.runner = BranchRunner(adapters, self.names, self.selected, layout, stop_after_last=stop_after_last)
        self.records = self.runner.records

    def install(self) -> list[Any]:
        handles = [self.transformer.register_forward_pre_hook(self._reset)]
        for i, block in enumerate(self.transformer.transformer_blocks[: self.last + 1]):
            attn, slots = block.attn1, self._slots[i]
            handles.append(attn.norm_q.register_forward_hook(self._keep(slots, "q")))
            handles.append(attn.norm_k.register_forward_hook(self._keep(slots, "k")))
            handles.append(attn.to_v.register_forward_hook(self._keep(slots, "v")))
            handles.append(block.register_forward_hook(self._after_block(i), with_kwargs=True))
        return handles

    def release(self) -> None:
        self.runner.release()
        self._slots = [_Slots() for _ in self.names]

    @staticmethod
    def _keep(slots: _Slots, name: str):
        def hook(_module, _inputs, output):
            # norm_added_q/k are different modules; only the visual projections land here.
            if getattr(slots, name) is None:
                setattr(slots, name, output)

        return hook

    def _reset(self, _module, _inputs) -> None:
        self.runner.start_pass(None)

    def _after_block(self, index: int):
        def hook(block, args, kwargs, _output):
            params = dict(zip(("hidden_states", "encoder_hidden_states", "temb"), args, strict=False))
            params.update(kwargs)
            temb, rotary = params["temb"], params.get("image_rotary_emb")
            slots = self._slots[index]
            q_plain = q = slots.q
            k = slots.k
            if rotary is not None:
                q, k = mochi_rope(q, *rotary), mochi_rope(k, *rotary)
            v = slots.v.unflatten(2, (block.attn1.heads, -1))
            self._slots[index] = _Slots()
            caption = params["encoder_hidden_states"]

            def embed(batch: int) -> torch.Tensor:
                embeds = self.expression_embeds.to(device=caption.device, dtype=caption.dtype)
                return self.transformer.time_embed.caption_proj(embeds.expand(batch, -1, -1))

            image = ImageAttention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), q_plain.transpose(1, 2))
            self.runner.run(index, image, temb, embed)

        return hook


@contextmanager
def capture_mochi_attention(
    transformer: nn.Module,
    expression_embeds: torch.Tensor,
    layout: ExpressionLayout,
    *,
    blocks: Iterable[int | str] | None = None,
    stop_after_last: bool = False,
) -> Iterator[MochiCapture]:
    """Install the expression branch on a Mochi transformer for the duration of the block."""
    session = MochiCapture(transformer, expression_embeds, layout, blocks=blocks, stop_after_last=stop_after_last)
    with installed(session):
        yield session


@dataclass
class DiffusersMochi:
    """Mochi 1 (or a Mochi-architecture model) on diffusers: transformer, video VAE, T5."""

    transformer: nn.Module
    vae: nn.Module
    t5: nn.Module
    t5_tokenizer: Any
    name: str = "mochi"
    operating_point: OperatingPoint = MOCHI_VIDEO
    t5_max_length: int = 256
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        check_mochi(self.transformer)
        self.device = torch.device(self.device)
        for m in (self.transformer, self.vae, self.t5):
            m.to(self.device).eval().requires_grad_(False)

    @property
    def tokenizer(self) -> Any:
        return self.t5_tokenizer

    @property
    def text_pad_length(self) -> int:
        return self.t5_max_length

    @property
    def latent_multiple(self) -> int:
        return 8 * self.transformer.config.patch_size

    @torch.no_grad()
    def _t5(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Mochi encodes prompts with T5's attention mask (unlike FLUX).
        return self.t5(ids.to(self.device), attention_mask=mask.to(self.device))[0].to(self.dtype)

    @torch.no_grad()
    def encode_caption(self, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.t5_tokenizer(
            [caption], padding="max_length", max_length=self.t5_max_length, truncation=True, return_tensors="pt"
        )
        return self._t5(tok.input_ids, tok.attention_mask), tok.attention_mask

    @torch.no_grad()
    def encode_expressions(self, expressions: Sequence[TokenizedExpression]) -> tuple[torch.Tensor, ExpressionLayout]:
        ids = torch.tensor([e.ids for e in expressions])
        mask = torch.tensor([[1] * e.valid_length + [0] * (len(e.ids) - e.valid_length) for e in expressions])
        embeds = self._t5(ids, mask)
        return pack_expressions(embeds, [e.valid_length for e in expressions])

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """``[T, H, W, 3]`` uint8 (T = 6k + 1) -> normalised latents ``[1, C, T', h, w]``."""
        pixels = to_model_pixels(frames, size).permute(1, 0, 2, 3)[None]  # [1, 3, T, h, w]
        cfg = self.vae.config
        z = self.vae.encode(pixels.to(self.device, next(self.vae.parameters()).dtype)).latent_dist.mode()
        mean = torch.tensor(cfg.latents_mean, device=z.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, device=z.device).view(1, -1, 1, 1, 1)
        return ((z - mean) * cfg.scaling_factor / std).to(self.dtype)

    @torch.no_grad()
    def capture(
        self,
        frames: np.ndarray,
        expressions: Sequence[TokenizedExpression],
        caption: str = "",
        *,
        sigma: float | FromBackend = FROM_BACKEND,
        seed: int = 0,
        resolution: int | None | FromBackend = FROM_BACKEND,
        blocks: Iterable[int | str] | None = None,
        progress: Callable[[str], None] | None = None,
        **_ignored: Any,
    ) -> CapturedAttention:
        """One Mochi pass at ``σ`` on a clip ``[T, H, W, 3]`` uint8; one capture "image" per latent frame.
        What is not given comes from :attr:`operating_point`.

        Clips whose length is not ``6k + 1`` are padded with their last frame (the padding's
        latent frames are dropped from the result).
        """
        point = self.operating_point.fill(sigma=sigma, resolution=resolution)
        sigma, resolution = point["sigma"], point["resolution"]
        check_sigma(sigma)
        say = progress or (lambda _s: None)
        n, height, width = frames.shape[:3]
        frames = pad_clip(frames)
        size = model_size((height, width), resolution, self.latent_multiple)
        say("encoding text")
        caption_embeds, caption_mask = self.encode_caption(caption)
        expr_embeds, layout = self.encode_expressions(expressions)
        say("encoding video")
        latents = self.encode_video(frames, size)
        noise = capture_noise(latents.shape, seed).to(latents)
        noisy = (1.0 - sigma) * latents + sigma * noise
        t_lat = latents.shape[2]
        patch = self.transformer.config.patch_size
        grid = (latents.shape[3] // patch, latents.shape[4] // patch)
        say("capturing attention")
        session = capture_mochi_attention(self.transformer, expr_embeds, layout, blocks=blocks, stop_after_last=True)
        with session as s, suppress(CaptureComplete):
            self.transformer(
                hidden_states=noisy.to(self.device),
                encoder_hidden_states=caption_embeds.to(self.device),
                timestep=torch.tensor([mochi_timestep(sigma)], device=self.device),
                encoder_attention_mask=caption_mask.to(self.device),
                return_dict=False,
            )
        blocks_out = per_latent_frame(s.records, t_lat, keep=valid_latent_frames(n))
        return CapturedAttention(
            blocks=blocks_out,
            expressions=list(expressions),
            layout=layout,
            geometry=ImageGeometry(original_size=(height, width), model_size=size, grid=grid),
            num_blocks=len(s.names),
            meta={"backend": "diffusers-mochi", "model": self.name, "sigma": sigma, "seed": seed, "frames": n},
        )
