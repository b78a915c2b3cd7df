"""What a diffusion transformer declares so that RefAM runs on it, on diffusers and in ComfyUI.

An architecture says only what differs between DiTs: where its joint blocks are, how their
text-stream pieces are called (block adapters, one per host), where the image tokens sit in a
block's attention call and how their RoPE is undone, what maps the text encoder's output into
the text stream, and its facts (operating point, text encoder, latent layout). The sessions that
install the capture — :class:`refam.backends.diffusers_capture.DiffusersCapture` (forward hooks)
and :class:`refam.backends.comfy_capture.ComfyCapture` (patches on a MODEL clone) — are written
once and serve every architecture.

Nothing here imports ComfyUI: its blocks are read through their own attributes, and helper
functions a block's code uses are taken from that block's own module (:func:`own_function`).
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refam.attention import ExpressionLayout, ImageAttention, JointBlockAdapter
from refam.operating_point import OperatingPoint

__all__ = ["Architecture", "ComfyBlock", "TextEncoder", "class_named", "own_function"]


@dataclass(frozen=True)
class TextEncoder:
    """The text encoder an architecture is conditioned with, as the token bookkeeping needs it."""

    name: str  # e.g. "t5xxl"; also its key in a ComfyUI CLIP's token dict
    pad_length: int  # tokens a prompt is padded to by the model's reference pipeline


@dataclass(frozen=True)
class ComfyBlock:
    """One joint block of a ComfyUI diffusion model: its RefAM name, its ``dit`` patch key, itself."""

    name: str  # "double.0", "single.3", "mochi.7"
    patch_key: tuple[str, int]  # ("double_block", 0): where ComfyUI looks up replace patches
    module: nn.Module


def class_named(obj: object, module_suffix: str, name: str) -> bool:
    """``obj`` is an instance of a class ``name`` defined in a module ending in ``module_suffix``
    (or of a subclass): a host's class recognised without importing the host."""
    return any(c.__name__ == name and c.__module__.endswith(module_suffix) for c in type(obj).__mro__)


def own_function(block: nn.Module, name: str) -> Callable[..., Any]:
    """A function from the module that defines ``block``'s class: what the block's own forward
    calls, so the expression branch computes exactly what the block does."""
    return getattr(sys.modules[type(block).__module__], name)


class Architecture(ABC):
    """A DiT family. Subclasses declare; the capture sessions never branch on the architecture."""

    name: str  # registry name ("flux1", "mochi")
    label: str  # for people ("FLUX.1", "Mochi 1")
    modality: str  # "image" (one capture image per input image) or "video" (a clip per pass)
    text_encoder: TextEncoder
    operating_point: OperatingPoint  # the paper's (or the untuned) defaults

    # -- diffusers -----------------------------------------------------------------------------
    @abstractmethod
    def diffusers_matches(self, transformer: nn.Module) -> bool:
        """Whether a diffusers transformer is of this architecture."""

    @abstractmethod
    def diffusers_blocks(self, transformer: nn.Module) -> list[tuple[str, nn.Module]]:
        """The joint blocks in execution order with their names; an error that says what to do
        when the transformer is of this family but cannot be read (e.g. an old diffusers)."""

    @abstractmethod
    def diffusers_adapter(self, name: str, block: nn.Module) -> JointBlockAdapter:
        """The block's text-stream pieces for the expression branch."""

    @abstractmethod
    def diffusers_qkv_modules(self, block: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
        """The modules whose first outputs in a block's forward are the image queries and keys
        (after QK-norm, before RoPE) and the values."""

    @abstractmethod
    def diffusers_output_module(self, block: nn.Module) -> nn.Module:
        """The module whose first input in a block's forward holds the image tokens' attention
        output (before the output projection): the output space's image vectors."""

    def diffusers_start_pass(self, transformer: nn.Module, kwargs: dict[str, Any]) -> Any:
        """From the transformer's forward arguments: this pass's token layout (opaque state handed
        back to the methods below), for models whose blocks cannot tell it alone. None by default."""
        return None

    @abstractmethod
    def diffusers_image_attention(
        self,
        block: nn.Module,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        inputs: dict[str, Any],
        state: Any,
    ) -> ImageAttention:
        """The image tokens' attention tensors of one block from what the q/k/v modules returned,
        the output module's input, the block's bound forward arguments (``hidden_states``,
        ``temb``, rotary embedding...) and the pass state of :meth:`diffusers_start_pass`."""

    @abstractmethod
    def diffusers_embed(self, transformer: nn.Module, embeds: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
        """Text-encoder embeddings ``[B, L, D]`` (expressions back to back, as ``layout`` says) -> the
        text stream, as the model does for the caption."""

    def diffusers_conditioning(self, name: str, inputs: dict[str, Any], state: Any) -> torch.Tensor:
        """What modulates the expression branch in block ``name``, from its bound forward arguments."""
        return inputs["temb"]

    def diffusers_text_like(self, inputs: dict[str, Any]) -> torch.Tensor:
        """A tensor of the block's stream: the branch runs on its device and dtype."""
        return inputs["hidden_states"]

    # -- ComfyUI -------------------------------------------------------------------------------
    comfy_wrapper = "DIFFUSION_MODEL"  # the WrappersMP point that starts a pass
    # How the branch rides a block: "replace" (a ``dit`` replace patch per block, which calls the
    # block) or "after_block" (one ``double_block`` patch called after every block, for a model
    # whose forward consults no replace patches, e.g. Z-Image's NextDiT).
    comfy_patch = "replace"

    @abstractmethod
    def comfy_matches(self, diffusion_model: nn.Module) -> bool:
        """Whether a ComfyUI diffusion model (``MODEL.model.diffusion_model``) is of this architecture."""

    @abstractmethod
    def comfy_check(self, diffusion_model: nn.Module) -> None:
        """Refuse, with what was found, a model of this family whose blocks the adapters cannot read."""

    @abstractmethod
    def comfy_blocks(self, diffusion_model: nn.Module) -> list[ComfyBlock]:
        """The joint blocks in execution order with their names and patch keys."""

    @abstractmethod
    def comfy_adapter(self, name: str, block: nn.Module) -> JointBlockAdapter:
        """The block's text-stream pieces for the expression branch."""

    @abstractmethod
    def comfy_start_pass(
        self, diffusion_model: nn.Module, args: tuple, kwargs: dict, branch_pooled: str
    ) -> tuple[Any, dict, int]:
        """From the pass wrapper's arguments: this pass's token layout (opaque state handed back to
        the methods below), its ``transformer_options`` and its batch size."""

    @abstractmethod
    def comfy_image_attention(
        self,
        block: ComfyBlock,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        args: dict,
        state: Any,
    ) -> ImageAttention:
        """The image tokens of one attention call (q/k/v and its output ``out``, all ``[B, H, T, Dh]``,
        RoPE applied) given the block's patch arguments."""

    @abstractmethod
    def comfy_conditioning(self, args: dict, state: Any) -> torch.Tensor:
        """The vector that modulates the expression branch in this block."""

    @abstractmethod
    def comfy_embed(self, diffusion_model: nn.Module, embeds: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
        """Text-encoder embeddings ``[B, L, D]`` (expressions back to back, as ``layout`` says) -> the
        text stream, as the model does for the caption."""

    @abstractmethod
    def comfy_text_like(self, block: ComfyBlock, args: dict) -> torch.Tensor:
        """A tensor of the block's text stream: the branch runs on its device and dtype."""
