"""RefAM capture on a ComfyUI FLUX ``MODEL`` (the user's own, already loaded).

Nothing global is touched. The capture lives on a **clone** of the ModelPatcher:

* a ``dit`` replace patch per joint block runs the block (chaining any patch already on that
  key), then one block of the expression branch (:func:`refam.attention.expression_branch`);
* the image queries/keys/values of the block's real attention call are read through
  ``transformer_options["optimized_attention_override"]`` (ComfyUI >= 0.3.59), chaining any
  override already there; older ComfyUI recomputes them from the block's own layers;
* a ``DIFFUSION_MODEL`` wrapper resets the per-pass state and learns the token layout.

The pass itself is ComfyUI's: ``CFGGuider`` with cfg 1 (only the positive conditioning runs)
and a one-step sampler at ``σ``, so model loading, lowvram offloading, conditioning processing
and other packs' wrappers behave exactly as in a normal sampling run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from refam.attention import (
    BlockCapture,
    CapturedAttention,
    ExpressionLayout,
    ImageAttention,
    ImageGeometry,
    pack_expressions,
    resolve_capture_blocks,
)
from refam.backends.branch import BranchRunner
from refam.backends.comfy_capture import (
    PATCH_KEY,
    attention_reader,
    comfy_pixels,
    denoise_once,
    positive_rows,
    preferred_attention,
    run_patched_pass,
)
from refam.expression import TokenizedExpression
from refam.images import model_size
from refam.noise import check_sigma
from refam.operating_point import FLUX_IMAGE, FROM_BACKEND, FromBackend, OperatingPoint, flux_point
from refam.variants import BRANCH_POOLED, check_choice

__all__ = [
    "COMFY_T5_PAD_LENGTH",
    "ComfyDoubleAdapter",
    "ComfyFlux",
    "ComfyFluxCapture",
    "ComfySingleAdapter",
    "capture_flux",
    "denoise_once",
    "encode_caption",
    "encode_expressions",
    "flux_diffusion_model",
    "unsupported_flux_variant",
    "supports_attention_override",
    "t5_tokenizer",
]

# ComfyUI pads FLUX's T5 prompts to 256 tokens (``T5XXLTokenizer(min_length=256)``).
COMFY_T5_PAD_LENGTH = 256
BlockProgress = Callable[[int, int], None]


# -- what the user handed us ------------------------------------------------------------------
# Diffusion transformers a user may hand the FLUX capture, by ComfyUI class name; RefAM names them
# instead of failing on a missing layer.
PLANNED_ARCHITECTURES = {
    "Chroma": "Chroma",
    "ChromaRadiance": "Chroma Radiance",
    "QwenImageTransformer2DModel": "Qwen-Image",
    "NextDiT": "Lumina 2 / Z-Image",
    "HunyuanVideo": "HunyuanVideo / HunyuanImage",
    "WanModel": "Wan",
}


def flux_diffusion_model(model: Any) -> torch.nn.Module:
    """The FLUX.1 ``comfy.ldm.flux.model.Flux`` inside a MODEL, checked before any work runs:
    a TypeError names what else was found, a NotImplementedError names a FLUX variant whose
    blocks the adapters do not know yet."""
    from comfy.ldm.flux.model import Flux

    base = getattr(model, "model", None)
    inner = getattr(base, "diffusion_model", None)
    found = type(inner).__name__ if inner is not None else type(model).__name__
    if found in PLANNED_ARCHITECTURES:
        raise NotImplementedError(
            f"RefAM does not support {PLANNED_ARCHITECTURES[found]} yet (support is planned); its FLUX capture "
            "runs on FLUX.1 dev / schnell / Kontext MODELs"
        )
    if not isinstance(inner, Flux) or found == "ControlNetFlux":
        raise TypeError(
            f"RefAM's FLUX capture needs a FLUX MODEL (comfy.ldm.flux.model.Flux: FLUX.1 dev/schnell/"
            f"Kontext); got {found}. Load FLUX with UNETLoader / CheckpointLoaderSimple."
        )
    variant = unsupported_flux_variant(inner)
    if variant is not None:
        raise NotImplementedError(
            f"RefAM does not support {variant} yet (support is planned); its FLUX capture runs on FLUX.1 "
            "dev / schnell / Kontext MODELs"
        )
    return inner


# Everything the adapters below read from a block; a block without one of these is a layout they
# were not written for.
_DOUBLE_PARTS = ("img_mod", "img_norm1", "img_attn", "txt_mod", "txt_norm1", "txt_attn", "txt_norm2", "txt_mlp")
_SINGLE_PARTS = ("modulation", "pre_norm", "linear1", "linear2", "norm", "mlp_act")


def unsupported_flux_variant(diffusion_model: torch.nn.Module) -> str | None:
    """What a ``Flux`` holds that the FLUX.1 adapters cannot read, in words; None for FLUX.1."""
    params = getattr(diffusion_model, "params", None)
    if getattr(params, "global_modulation", False):
        return "FLUX.2 / FLUX.2 klein (one modulation shared by all blocks)"
    if getattr(params, "yak_mlp", False) or getattr(params, "txt_norm", False):
        return "this FLUX variant (gated MLPs / a text norm, e.g. Ovis-Image)"
    for kind, blocks, parts in (
        ("double", diffusion_model.double_blocks, _DOUBLE_PARTS),
        ("single", diffusion_model.single_blocks, _SINGLE_PARTS),
    ):
        for index, block in enumerate(blocks):
            missing = [part for part in parts if getattr(block, part, None) is None]
            if missing:
                return f"a FLUX model whose {kind} block {index} has no {', '.join(missing)}"
            if kind == "single" and getattr(block, "mlp_hidden_dim_first", block.mlp_hidden_dim) != block.mlp_hidden_dim:
                return f"a FLUX model whose single block {index} has a gated MLP"
    return None


def supports_attention_override() -> bool:
    """ComfyUI >= 0.3.59 routes every attention call through ``optimized_attention_override``."""
    import comfy.ldm.modules.attention as attention

    return hasattr(attention, "wrap_attn")


def _t5_part(clip: Any) -> Any:
    """ComfyUI's T5-XXL tokenizer inside a CLIP: ``tokenizer.t5xxl`` for FLUX's dual tokenizer;
    a single-encoder tokenizer (Mochi's ``SD1Tokenizer`` with ``clip_name="t5xxl"``) keeps it
    under its ``clip`` attribute (``clip_t5xxl``)."""
    tokenizer = getattr(clip, "tokenizer", None)
    inner = getattr(tokenizer, "t5xxl", None)
    if inner is None and getattr(tokenizer, "clip_name", None) == "t5xxl":
        inner = getattr(tokenizer, getattr(tokenizer, "clip", ""), None)
    return inner


def t5_tokenizer(clip: Any) -> Any:
    """The Hugging Face T5 tokenizer behind a FLUX or Mochi CLIP (word offsets for token roles)."""
    inner = _t5_part(clip)
    hf = getattr(inner, "tokenizer", None)
    if hf is None:
        raise TypeError(
            "RefAM needs the model's T5-XXL text encoder (FLUX: DualCLIPLoader type 'flux'; Mochi: CLIPLoader "
            f"type 'mochi'); the CLIP given has tokenizer {type(getattr(clip, 'tokenizer', None)).__name__} "
            "without a T5-XXL part"
        )
    return hf


def t5_pad_length(clip: Any) -> int:
    return int(getattr(_t5_part(clip), "min_length", None) or COMFY_T5_PAD_LENGTH)


# -- text ------------------------------------------------------------------------------------
def encode_caption(clip: Any, caption: str, guidance: float | None = FLUX_IMAGE.guidance) -> list:
    """CONDITIONING for the denoising pass; the caption is taken literally (no ``(word:1.2)``)."""
    tokens = clip.tokenize(caption or "", disable_weights=True)
    out = clip.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
    cond = out.pop("cond")
    if guidance is not None:
        out["guidance"] = float(guidance)
    return [[cond, out]]


@torch.no_grad()
def encode_expressions(
    clip: Any, expressions: Sequence[TokenizedExpression]
) -> tuple[torch.Tensor, ExpressionLayout]:
    """T5 embeddings of every expression's non-padding tokens, back to back: ``[1, L, D]``.

    The token ids are RefAM's own (roles and magnets already decided), handed to the CLIP as
    pre-tokenized sections so ComfyUI's weight syntax never sees them. Each expression is one
    section: T5 encodes them side by side in one batch, each padded as a caption would be.
    """
    if not expressions:
        raise ValueError("no expressions to encode")
    t5_tokenizer(clip)  # the TypeError for a non-FLUX CLIP
    tokens = dict(clip.tokenize(""))
    lengths = {len(e.ids) for e in expressions}
    if len(lengths) != 1:
        raise ValueError(f"expressions must share one padded length, got {sorted(lengths)}")
    tokens["t5xxl"] = [[(int(i), 1.0) for i in e.ids] for e in expressions]
    cond = clip.encode_from_tokens(tokens)
    width = lengths.pop()
    rows = cond.reshape(len(expressions), width, cond.shape[-1])
    joined, layout = pack_expressions(rows, [e.valid_length for e in expressions])
    return joined.float().cpu(), layout


# -- the expression branch's view of ComfyUI's blocks ----------------------------------------
def _modulate(x: torch.Tensor, mod: Any) -> torch.Tensor:
    return torch.addcmul(mod.shift, x, 1 + mod.scale)


def _split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, n = qkv.shape[:2]
    q, k, v = qkv.view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    return q, k, v


def _fp16_guard(x: torch.Tensor) -> torch.Tensor:
    # The blocks' own fp16 overflow guard, so the branch sees what the model would.
    return torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504) if x.dtype == torch.float16 else x


class ComfyDoubleAdapter:
    """Text-stream pieces of ComfyUI's FLUX ``DoubleStreamBlock``."""

    kind = "double"

    def __init__(self, block: torch.nn.Module) -> None:
        self.block = block

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        block = self.block
        mod1, mod2 = block.txt_mod(vec)
        q, k, v = _split_heads(block.txt_attn.qkv(_modulate(block.txt_norm1(expr), mod1)), block.num_heads)
        q, k = block.txt_attn.norm(q, k, v)
        return q, k, v, (mod1, mod2)

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        mod1, mod2 = state
        block = self.block
        expr = expr + mod1.gate * block.txt_attn.proj(attn_out.to(expr.dtype))
        expr = expr + mod2.gate * block.txt_mlp(_modulate(block.txt_norm2(expr), mod2))
        return _fp16_guard(expr)


class ComfySingleAdapter:
    """Text-stream view of ComfyUI's FLUX ``SingleStreamBlock`` (weights shared by all tokens)."""

    kind = "single"

    def __init__(self, block: torch.nn.Module) -> None:
        self.block = block

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        block = self.block
        mod, _ = block.modulation(vec)
        qkv, mlp = torch.split(
            block.linear1(_modulate(block.pre_norm(expr), mod)),
            [3 * block.hidden_size, block.mlp_hidden_dim],
            dim=-1,
        )
        q, k, v = _split_heads(qkv, block.num_heads)
        q, k = block.norm(q, k, v)
        return q, k, v, (mlp, mod.gate)

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        mlp, gate = state
        block = self.block
        out = block.linear2(torch.cat((attn_out.to(mlp.dtype), block.mlp_act(mlp)), 2))
        return _fp16_guard(expr + gate * out)


def _rope(x: torch.Tensor, pe: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """FLUX RoPE exactly as ``comfy.ldm.flux.math.attention`` applies it (float32, then back)."""
    shape = x.shape
    x = x.to(dtype=pe.dtype).reshape(*shape[:-1], -1, 1, 2)
    return (pe[..., 0] * x[..., 0] + pe[..., 1] * x[..., 1]).reshape(*shape).type_as(like)


def _unrope(x: torch.Tensor, pe: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The queries before RoPE: each position's rotation undone (its transpose), in float32."""
    return x if pe is None else _rope(x, pe.transpose(-1, -2), like)


def _recompute_double(block, img: torch.Tensor, vec: torch.Tensor, pe: torch.Tensor) -> ImageAttention:
    mod1, _ = block.img_mod(vec)
    q, k, v = _split_heads(block.img_attn.qkv(_modulate(block.img_norm1(img), mod1)), block.num_heads)
    q, k = block.img_attn.norm(q, k, v)
    return ImageAttention(_rope(q, pe, v), _rope(k, pe, v), v, q)


def _recompute_single(block, x_img: torch.Tensor, vec: torch.Tensor, pe: torch.Tensor) -> ImageAttention:
    mod, _ = block.modulation(vec)
    qkv = block.linear1(_modulate(block.pre_norm(x_img), mod))[..., : 3 * block.hidden_size]
    q, k, v = _split_heads(qkv, block.num_heads)
    q, k = block.norm(q, k, v)
    return ImageAttention(_rope(q, pe, v), _rope(k, pe, v), v, q)


# -- the capture session -----------------------------------------------------------------------
@dataclass
class _Pass:
    """Per-forward state, reset by the diffusion-model wrapper."""

    txt_len: int = 0
    n_img: int = 0
    image: ImageAttention | None = None
    pe: torch.Tensor | None = None  # the running block's RoPE rotations
    vec_shift: torch.Tensor | None = None  # added to the blocks' conditioning vector for the branch


@dataclass
class ComfyFluxCapture:
    """The expression branch as patches on a clone of a ComfyUI FLUX MODEL.

    ``expression_embeds [1, L, D]`` are T5 outputs (see :func:`encode_expressions`); the model's
    own ``txt_in`` maps them into the text stream, as it does for the caption.
    """

    model: Any
    expression_embeds: torch.Tensor
    layout: ExpressionLayout
    blocks: Iterable[int | str] | None = None
    stop_after_last: bool = False
    read_queries: str = "auto"  # "auto" | "override" | "recompute"
    progress: BlockProgress | None = None
    branch_pooled: str = BRANCH_POOLED[0]
    records: list[BlockCapture] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.diffusion_model = flux_diffusion_model(self.model)
        dm = self.diffusion_model
        self.names = [f"double.{i}" for i in range(len(dm.double_blocks))]
        self.names += [f"single.{i}" for i in range(len(dm.single_blocks))]
        self.selected = resolve_capture_blocks(self.blocks, len(self.names), self.names)
        self.last = self.selected[-1]
        if self.expression_embeds.shape[1] != self.layout.total:
            raise ValueError(
                f"expression embeddings hold {self.expression_embeds.shape[1]} tokens, "
                f"layout expects {self.layout.total}"
            )
        check_choice("branch_pooled", self.branch_pooled, BRANCH_POOLED)
        if self.read_queries not in ("auto", "override", "recompute"):
            raise ValueError(f"read_queries must be auto, override or recompute, got {self.read_queries!r}")
        use_override = self.read_queries == "override" or (
            self.read_queries == "auto" and supports_attention_override()
        )
        if use_override and not supports_attention_override():
            raise RuntimeError("this ComfyUI has no optimized_attention_override (needs >= 0.3.59)")
        self.use_override = use_override
        self._adapters = [ComfyDoubleAdapter(b) for b in dm.double_blocks]
        self._adapters += [ComfySingleAdapter(b) for b in dm.single_blocks]
        self._preferred = [preferred_attention(a.block) for a in self._adapters] if use_override else []
        self._state = _Pass()
        self.runner = BranchRunner(
            self._adapters,
            self.names,
            set(self.selected),
            self.layout,
            stop_after_last=self.stop_after_last,
            progress=self.progress,
            records=self.records,
        )

    # -- installing ---------------------------------------------------------------------------
    def patched_model(self) -> Any:
        """A clone of the MODEL carrying the capture; the original's options are left untouched."""
        clone = self.model.clone()
        replace = clone.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
        for index in range(self.last + 1):
            kind, local = self.names[index].split(".")
            key = (f"{kind}_block", int(local))
            clone.set_model_patch_replace(self._block_patch(index, replace.get(key)), "dit", key[0], key[1])
        from comfy.patcher_extension import WrappersMP

        clone.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, PATCH_KEY, self._on_forward)
        return clone

    def release(self) -> None:
        self._state = _Pass()
        self.runner.release()

    # -- per forward ----------------------------------------------------------------------------
    def _on_forward(self, executor, *args, **kwargs):
        x, context = args[0], args[2]
        options = args[7] if len(args) > 7 else kwargs.get("transformer_options", {})
        grid = _token_grid(x.shape, self.diffusion_model.patch_size)
        y = args[3] if len(args) > 3 else kwargs.get("y")
        self._state = _Pass(txt_len=context.shape[1], n_img=grid[0] * grid[1], vec_shift=self._pooled_shift(y))
        self.runner.start_pass(positive_rows(options.get("cond_or_uncond"), x.shape[0]))
        return executor(*args, **kwargs)

    @torch.no_grad()
    def _pooled_shift(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """With ``branch_pooled="zero"``: FLUX's pooled-text term ``vector_in(y)`` swapped for a zero vector's."""
        dm = self.diffusion_model
        vector_in = getattr(dm, "vector_in", None)
        if self.branch_pooled == "caption" or vector_in is None or y is None:
            return None
        y = y[:, : dm.params.vec_in_dim].to(next(vector_in.parameters()).dtype)
        return vector_in(torch.zeros_like(y)) - vector_in(y)

    def _block_patch(self, index: int, previous: Callable | None):
        kind = self.names[index].split(".")[0]

        def patch(args: dict, extra: dict) -> dict:
            import comfy.model_management

            comfy.model_management.throw_exception_if_processing_interrupted()
            state = self._state
            if kind == "double":
                state.txt_len = args["txt"].shape[1]
            state.pe = args.get("pe")
            run = previous if previous is not None else extra["original_block"]
            call_args = dict(args)
            image = None
            if self.use_override:
                options = dict(args.get("transformer_options") or {})
                options["optimized_attention_override"] = self._attention_reader(
                    options.get("optimized_attention_override"), self._preferred[index]
                )
                call_args["transformer_options"] = options
            else:
                image = self._recompute(index, kind, args)
            out = run(call_args, extra) if previous is not None else run(call_args)
            if self.use_override:
                image, state.image = state.image, None
                if image is None:
                    raise RuntimeError(f"{self.names[index]}: no attention call was seen")
            vec = args["vec"] if state.vec_shift is None else args["vec"] + state.vec_shift.to(args["vec"])
            self._branch(index, image, vec, args["txt"] if kind == "double" else args["img"])
            return out

        return patch

    def _attention_reader(self, previous: Callable | None, preferred: Callable | None):
        def keep(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
            s = self._state
            image = slice(s.txt_len, s.txt_len + s.n_img)
            q_img = q[:, :, image]
            pe = None if s.pe is None else s.pe[:, :, image]
            s.image = ImageAttention(q_img, k[:, :, image], v[:, :, image], _unrope(q_img, pe, v))

        return attention_reader(previous, keep, preferred)

    def _recompute(self, index: int, kind: str, args: dict) -> ImageAttention:
        s = self._state
        block = self._adapters[index].block
        pe = args["pe"][:, :, s.txt_len : s.txt_len + s.n_img]
        if kind == "double":
            return _recompute_double(block, args["img"][:, : s.n_img], args["vec"], pe)
        return _recompute_single(block, args["img"][:, s.txt_len : s.txt_len + s.n_img], args["vec"], pe)

    def _branch(self, index: int, image: ImageAttention, vec: torch.Tensor, like: torch.Tensor) -> None:
        def embed(batch: int) -> torch.Tensor:
            embeds = self.expression_embeds.to(device=like.device, dtype=like.dtype)
            return self.diffusion_model.txt_in(embeds.expand(batch, -1, -1))

        self.runner.run(index, image, vec, embed)


def _token_grid(latent_shape: Sequence[int], patch: int) -> tuple[int, int]:
    """FLUX's token grid for a latent ``[..., h, w]`` (ComfyUI pads odd sides to the patch)."""
    h, w = latent_shape[-2:]
    return (h + patch // 2) // patch, (w + patch // 2) // patch


def _latent_multiple(vae: Any, diffusion_model: torch.nn.Module) -> int:
    ratio = getattr(vae, "downscale_ratio", 8)
    ratio = ratio if isinstance(ratio, int) else 8
    return ratio * diffusion_model.patch_size


@torch.no_grad()
def capture_flux(
    model: Any,
    vae: Any,
    images: np.ndarray,
    positive: list,
    expression_embeds: torch.Tensor,
    layout: ExpressionLayout,
    expressions: Sequence[TokenizedExpression],
    *,
    sigma: float = FLUX_IMAGE.sigma,
    seed: int = 0,
    blocks: Iterable[int | str] | None = None,
    resolution: int | None = FLUX_IMAGE.resolution,
    progress: BlockProgress | None = None,
    read_queries: str = "auto",
    branch_pooled: str = BRANCH_POOLED[0],
) -> CapturedAttention:
    """One FLUX pass at ``σ`` on ``images [B, H, W, 3]`` uint8 with every expression's branch."""
    check_sigma(sigma)
    session = ComfyFluxCapture(
        model,
        expression_embeds,
        layout,
        blocks=blocks,
        stop_after_last=True,
        read_queries=read_queries,
        progress=progress,
        branch_pooled=branch_pooled,
    )
    batch, height, width = images.shape[:3]
    size = model_size((height, width), resolution, _latent_multiple(vae, session.diffusion_model))
    latent = vae.encode(comfy_pixels(images, size)).float()
    run_patched_pass(session, latent, positive, sigma, seed)
    grid = _token_grid(latent.shape, session.diffusion_model.patch_size)
    return CapturedAttention(
        blocks=session.records,
        expressions=list(expressions),
        layout=layout,
        geometry=ImageGeometry(original_size=(height, width), model_size=size, grid=grid),
        num_blocks=len(session.names),
        meta={"backend": "comfy-flux", "sigma": sigma, "seed": seed, "branch_pooled": branch_pooled},
    )


@dataclass
class ComfyFlux:
    """The user's ComfyUI MODEL / CLIP / VAE as a :class:`refam.pipeline.AttentionBackend`."""

    model: Any
    clip: Any
    vae: Any
    name: str = "comfy-flux"
    progress: BlockProgress | None = None
    operating_point: OperatingPoint | None = None  # None: FLUX.1-dev's or schnell's, read off the MODEL

    def __post_init__(self) -> None:
        dm = flux_diffusion_model(self.model)
        t5_tokenizer(self.clip)
        if self.operating_point is None:
            self.operating_point = flux_point(bool(dm.params.guidance_embed))

    @property
    def tokenizer(self) -> Any:
        return t5_tokenizer(self.clip)

    @property
    def text_pad_length(self) -> int:
        return self.operating_point.text_length or t5_pad_length(self.clip)

    def capture(
        self,
        images: np.ndarray,
        expressions: Sequence[TokenizedExpression],
        caption: str = "",
        *,
        sigma: float | FromBackend = FROM_BACKEND,
        seed: int = 0,
        guidance: float | None | FromBackend = FROM_BACKEND,
        resolution: int | None | FromBackend = FROM_BACKEND,
        blocks: Iterable[int | str] | None = None,
        progress: Callable[[str], None] | None = None,
        branch_pooled: str = BRANCH_POOLED[0],
    ) -> CapturedAttention:
        point = self.operating_point.fill(sigma=sigma, guidance=guidance, resolution=resolution)
        sigma, guidance, resolution = point["sigma"], point["guidance"], point["resolution"]
        if progress:
            progress("encoding text")
        positive = encode_caption(self.clip, caption, guidance)
        embeds, layout = encode_expressions(self.clip, expressions)
        if progress:
            progress("capturing attention")
        captured = capture_flux(
            self.model,
            self.vae,
            images,
            positive,
            embeds,
            layout,
            expressions,
            sigma=sigma,
            seed=seed,
            blocks=blocks,
            resolution=resolution,
            progress=self.progress,
            branch_pooled=branch_pooled,
        )
        captured.meta.update(model=self.name, caption=caption)
        return captured
