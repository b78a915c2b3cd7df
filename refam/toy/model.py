"""The toy FLUX: a tiny FLUX-architecture text-to-image model for the toy world.

It is a plain diffusers ``FluxTransformer2DModel`` (double + single blocks), a tiny T5 encoder
on the REAL T5 tokenizer, and a fixed latent mapping instead of a VAE (2x2 space-to-depth of the
pixels, then FLUX's own 2x2 packing: 4x4 pixel patches). It runs through the same
:class:`~refam.backends.diffusers_flux.DiffusersFlux` image path and capture as FLUX.

The T5 embedding table is stored sparsely: only rows of tokens the toy world uses (captions,
expressions, magnets, EOS) are trained and saved; every other row is zero.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from refam.backends.diffusers_flux import DiffusersFlux
from refam.operating_point import OperatingPoint
from refam.toy.worlds import DEFAULT_WORLD, WORLDS
from refam.variants import DEFAULT_SCORE

__all__ = [
    "DEFAULT_WEIGHTS",
    "TOKENIZER_DIR",
    "SpaceToDepthCodec",
    "ToyConfig",
    "ToyFlux",
    "build_toy_modules",
    "load_toy",
    "load_toy_tokenizer",
    "save_toy",
    "toy_backend",
    "toy_vocabulary",
    "weights_for",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"


def weights_for(world: str) -> Path:
    """The committed weights of the toy model trained on ``world``."""
    return WEIGHTS_DIR / WORLDS[world].weights


DEFAULT_WEIGHTS = weights_for(DEFAULT_WORLD)
# T5's own tokenizer files (Apache-2.0), shipped so the toy runs without FLUX, ComfyUI or a download.
TOKENIZER_DIR = WEIGHTS_DIR / "t5_tokenizer"


@dataclass
class ToyConfig:
    image_size: int = 48
    width_heads: int = 4
    head_dim: int = 32
    double_blocks: int = 3
    single_blocks: int = 3
    text_dim: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_ff: int = 256
    text_pad_length: int = 32
    axes_dims_rope: tuple[int, int, int] = (8, 12, 12)
    default_sigma: float = 0.5
    default_score: str = DEFAULT_SCORE  # the paper's unless release.py validated another
    world: str = "v1"  # the toy world it was trained on (refam.toy.worlds.WORLDS)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ToyConfig:
        data = json.loads(text)
        data["axes_dims_rope"] = tuple(data["axes_dims_rope"])
        return cls(**data)


class SpaceToDepthCodec(nn.Module):
    """A fixed, invertible 'VAE': pixels in [-1, 1] -> ``[B, 3·f², H/f, W/f]``."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_unshuffle(pixels, self.factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_shuffle(latents, self.factor)


class ToyFlux(DiffusersFlux):
    """:class:`DiffusersFlux` whose latent mapping is the fixed space-to-depth codec. Its operating
    point is its weights' config: the σ ``release.py`` validated, the one image size it knows."""

    @property
    def default_sigma(self) -> float:
        return self.operating_point.sigma

    @property
    def latent_multiple(self) -> int:
        return self.vae.factor * 2

    @property
    def world(self) -> str:
        """The toy world the weights were trained on (:data:`refam.toy.worlds.WORLDS`)."""
        return self.toy_config.world

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(pixels.to(self.device, torch.float32)).to(self.dtype)


def toy_vocabulary(tokenizer: Any, samples: int = 4000, seed: int = 12345, world: str = "v1") -> list[int]:
    """Every token id the toy world can produce: captions, all referral wordings, magnets, specials."""
    from refam.expression import DEFAULT_MAGNETS, STOP_WORDS

    texts = set(_world_texts(world, samples, seed))
    texts.update(DEFAULT_MAGNETS)
    # Stop words are what the method filters; give them rows so they behave like words, not zeros.
    texts.update(STOP_WORDS)
    ids: set[int] = set()
    for t in texts:
        ids.update(tokenizer(t).input_ids)
    ids.update(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None)
    return sorted(ids)


@lru_cache(maxsize=4)
def _world_texts(world: str, samples: int, seed: int) -> frozenset[str]:
    """Captions and referral wordings of ``samples`` scenes (a pure function, so cached: sampling
    every referral of thousands of scenes takes seconds)."""
    scenes = WORLDS[world].scenes
    rng = np.random.default_rng(seed)
    texts = set()
    for _ in range(samples):
        scene = scenes.sample_scene(rng, (1, 4))
        texts.add(scenes.caption(scene, rng))
        for kind in scenes.ALL_KINDS:
            texts.update(r.text for r in scenes.referrals(scene, (kind,), rng))
    if world != "v1":  # v1's vocabulary predates the namings; its committed weights fix it
        texts.update(scenes.caption(scenes.sample_scene(rng, (1, 4)), rng, naming) for naming in scenes.NAMINGS)
    return frozenset(texts)


def build_toy_modules(config: ToyConfig, vocab_ids: list[int], vocab_size: int, seed: int = 0):
    """Fresh (random) transformer and T5 encoder; embedding rows outside ``vocab_ids`` are zero."""
    from diffusers import FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=3 * 4 * 4,
        num_layers=config.double_blocks,
        num_single_layers=config.single_blocks,
        attention_head_dim=config.head_dim,
        num_attention_heads=config.width_heads,
        joint_attention_dim=config.text_dim,
        pooled_projection_dim=config.text_dim,
        guidance_embeds=False,
        axes_dims_rope=config.axes_dims_rope,
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=config.text_dim,
            d_kv=config.text_dim // config.text_heads,
            d_ff=config.text_ff,
            num_layers=config.text_layers,
            num_heads=config.text_heads,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
        )
    )
    with torch.no_grad():
        emb = t5.shared.weight
        keep = torch.zeros(emb.shape[0], dtype=torch.bool)
        keep[vocab_ids] = True
        emb[~keep] = 0.0
    return transformer, t5


def save_toy(
    path: Path, transformer: nn.Module, t5: nn.Module, config: ToyConfig, vocab_ids: list[int], meta: dict
) -> None:
    """One safetensors file (fp16 weights, sparse embedding) + the config next to it."""
    from safetensors.torch import save_file

    tensors = {
        f"transformer.{k}": v.detach().to(torch.float16).contiguous()
        for k, v in transformer.state_dict().items()
    }
    for k, v in t5.state_dict().items():
        if k in ("shared.weight", "encoder.embed_tokens.weight"):
            continue
        tensors[f"t5.{k}"] = v.detach().to(torch.float16).contiguous()
    ids = torch.tensor(vocab_ids, dtype=torch.int64)
    tensors["t5.embedding_ids"] = ids
    tensors["t5.embedding_rows"] = t5.shared.weight.detach()[ids].to(torch.float16).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"config": config.to_json(), "meta": json.dumps(meta)})


def load_toy_tokenizer(tokenizer_path: str | Path | None = None) -> Any:
    """T5's tokenizer for the toy model: ``tokenizer_path`` if given, else the copy shipped beside the
    weights (:data:`TOKENIZER_DIR`), else ComfyUI's or the Hugging Face cache's."""
    import os

    from transformers import AutoTokenizer

    candidates = [tokenizer_path] if tokenizer_path else []
    candidates.append(TOKENIZER_DIR)
    # Only reached when the package lost its data files (a stripped install).
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(Path(os.environ["COMFYUI_PATH"]) / "comfy" / "text_encoders" / "t5_tokenizer")
    for c in candidates:
        if c and Path(c).is_dir():
            return AutoTokenizer.from_pretrained(str(c))
    for repo in ("google/t5-v1_1-xxl", "black-forest-labs/FLUX.1-dev"):
        try:
            kw = {"subfolder": "tokenizer_2"} if "FLUX" in repo else {}
            return AutoTokenizer.from_pretrained(repo, local_files_only=True, **kw)
        except (OSError, ValueError):
            continue
    raise FileNotFoundError(
        f"the toy model needs the T5 tokenizer, shipped in {TOKENIZER_DIR}, which is missing: reinstall "
        "refam, pass tokenizer_path=..., set COMFYUI_PATH to a ComfyUI checkout, or have "
        "google/t5-v1_1-xxl in the Hugging Face cache"
    )


def load_toy(
    path: str | Path | None = None,
    *,
    tokenizer_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ToyFlux:
    """The committed toy model (or a checkpoint written by the trainer) as a RefAM backend."""
    from safetensors import safe_open

    path = Path(path) if path else DEFAULT_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"toy weights not found: {path} (train them with python -m refam.toy.train)")
    with safe_open(str(path), framework="pt") as f:
        config = ToyConfig.from_json(f.metadata()["config"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    tokenizer = load_toy_tokenizer(tokenizer_path)
    ids = tensors.pop("t5.embedding_ids")
    rows = tensors.pop("t5.embedding_rows")
    transformer, t5 = build_toy_modules(config, ids.tolist(), len(tokenizer))
    transformer.load_state_dict(
        {k[len("transformer.") :]: v.float() for k, v in tensors.items() if k.startswith("transformer.")}
    )
    t5_sd = {k[len("t5.") :]: v.float() for k, v in tensors.items() if k.startswith("t5.")}
    shared = torch.zeros_like(t5.shared.weight)
    shared[ids] = rows.float()
    t5_sd["shared.weight"] = shared
    t5_sd["encoder.embed_tokens.weight"] = shared
    t5.load_state_dict(t5_sd)
    return toy_backend(transformer, t5, tokenizer, config, name=f"{path.name}", device=device, dtype=dtype)


def toy_backend(
    transformer: nn.Module,
    t5: nn.Module,
    tokenizer: Any,
    config: ToyConfig,
    *,
    name: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ToyFlux:
    """Wrap toy modules as a RefAM backend, labelled so nobody mistakes it for FLUX."""
    backend = ToyFlux(
        transformer=transformer.to(dtype),
        vae=SpaceToDepthCodec(2),
        t5=t5.to(dtype),
        t5_tokenizer=tokenizer,
        clip=None,
        clip_tokenizer=None,
        name=f"refam-toy ({name}) — a toy model trained on synthetic shapes, not FLUX",
        t5_max_length=config.text_pad_length,
        device=torch.device(device),
        dtype=dtype,
    )
    backend.native_size = (config.image_size, config.image_size)
    backend.toy_config = config
    backend.operating_point = OperatingPoint(
        sigma=config.default_sigma,
        resolution=config.image_size,
        score=config.default_score,
        text_length=config.text_pad_length,
    )
    return backend
