"""Which SAM / SAM2 model a checkpoint holds, from its ``{key: shape}`` signature or file name.

Works on shapes only, so it runs without building (or even importing) either library, and the
large variants can be recognised without the memory to instantiate them.

Signatures (after :func:`refam.weights.strip_prefixes`):

* SAM: ``image_encoder.patch_embed.proj.weight`` is ``[C, 3, 16, 16]`` with C = 768 / 1024 / 1280
  for ViT-B / L / H, with 12 / 24 / 32 ``image_encoder.blocks``; ``image_encoder.pos_embed``
  ``[1, S/16, S/16, C]`` gives the input size S (1024 for the released models).
* SAM2: ``image_encoder.trunk.patch_embed.proj.weight`` is ``[C, 3, 7, 7]`` with C = 96 (tiny,
  12 blocks; small, 16 blocks), 112 (base+, 24) or 144 (large, 48). SAM 2.1 adds
  ``no_obj_embed_spatial`` and ``obj_ptr_tpos_proj`` (the 2.1 configs switch on
  ``no_obj_embed_spatial`` and ``proj_tpos_enc_in_obj_ptrs``); 2.0 has neither.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from refam.weights import count_blocks

__all__ = [
    "SAM2_SIZES",
    "SAM_VARIANTS",
    "ModelSpec",
    "identify_model",
    "parse_filename",
    "parse_variant",
    "shapes_of",
]

Shapes = Mapping[str, Sequence[int]]

# variant -> (encoder embed dim, encoder depth)
SAM_VARIANTS: dict[str, tuple[int, int]] = {"vit_b": (768, 12), "vit_l": (1024, 24), "vit_h": (1280, 32)}
# size letter as in the config names -> (trunk embed dim, trunk depth)
SAM2_SIZES: dict[str, tuple[int, int]] = {"t": (96, 12), "s": (96, 16), "b+": (112, 24), "l": (144, 48)}
SAM2_VERSIONS = ("2.0", "2.1")

_SAM_PATCH = "image_encoder.patch_embed.proj.weight"
_SAM_POS = "image_encoder.pos_embed"
_SAM2_PATCH = "image_encoder.trunk.patch_embed.proj.weight"
_SAM2_1_KEYS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight")

_SIZE_WORDS = {
    "t": "t",
    "tiny": "t",
    "s": "s",
    "small": "s",
    "b+": "b+",
    "bplus": "b+",
    "base_plus": "b+",
    "baseplus": "b+",
    "base+": "b+",
    "l": "l",
    "large": "l",
}
_SAM2_RE = re.compile(
    r"sam_?2(?P<minor>[._]1)?[_-]?(?:hiera[_-]?)?"
    r"(?P<size>tiny|small|base[_-]?plus|b\+|bplus|large|[tsl])(?![a-z0-9])"
)
_SAM2_BARE_RE = re.compile(r"^(?:hiera[_-]?)?(?P<size>tiny|small|base[_-]?plus|b\+|bplus|large|[tsl])$")
_SAM_RE = re.compile(r"(?:^|[^a-z])vit[_-]?(?P<size>[bhl])(?![a-z])")
_SAM_BARE_RE = re.compile(r"^(?P<size>[bhl]|base|large|huge)$")
_SAM_SIZE_WORDS = {
    "b": "vit_b",
    "base": "vit_b",
    "l": "vit_l",
    "large": "vit_l",
    "h": "vit_h",
    "huge": "vit_h",
}


@dataclass(frozen=True)
class ModelSpec:
    """What to build: ``family`` ``"sam"`` or ``"sam2"``; ``variant`` ``"vit_b"``/``"vit_l"``/
    ``"vit_h"`` or a SAM2 config name such as ``"sam2.1_hiera_t"``; ``image_size`` the input
    size the weights fix (SAM's absolute position embedding), ``None`` when they do not."""

    family: str
    variant: str
    image_size: int | None = None

    @property
    def name(self) -> str:
        return f"sam_{self.variant}" if self.family == "sam" else self.variant


def shapes_of(state_dict: Mapping[str, object]) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of a state dict (tensors or anything with ``.shape``)."""
    return {k: tuple(getattr(v, "shape", ())) for k, v in state_dict.items()}


def sam2_variant(size: str, version: str) -> str:
    """``("t", "2.1")`` -> ``"sam2.1_hiera_t"`` (the name of the sam2 package's config)."""
    return f"sam2{'.1' if version == '2.1' else ''}_hiera_{size}"


def sam2_version_of(variant: str) -> str:
    return "2.1" if variant.startswith("sam2.1") else "2.0"


def detect_family(shapes: Shapes) -> str | None:
    if _SAM2_PATCH in shapes or any(k.startswith(("sam_mask_decoder.", "memory_attention.")) for k in shapes):
        return "sam2"
    if _SAM_PATCH in shapes or any(k.startswith("mask_decoder.") for k in shapes):
        return "sam"
    return None


def detect_variant(shapes: Shapes, family: str) -> tuple[str | None, str]:
    """``(variant or None, what was seen)``; the description goes into error messages."""
    if family == "sam":
        if _SAM_PATCH not in shapes:
            return None, f"no {_SAM_PATCH}"
        dim, depth = shapes[_SAM_PATCH][0], count_blocks(shapes, "image_encoder.blocks.")
        seen = f"encoder width {dim}, {depth} blocks"
        found = [v for v, sig in SAM_VARIANTS.items() if sig == (dim, depth)]
        return (found[0] if found else None), seen
    if _SAM2_PATCH not in shapes:
        return None, f"no {_SAM2_PATCH}"
    dim, depth = shapes[_SAM2_PATCH][0], count_blocks(shapes, "image_encoder.trunk.blocks.")
    version = _sam2_version(shapes)
    seen = f"trunk width {dim}, {depth} blocks, SAM {version} keys"
    found = [s for s, sig in SAM2_SIZES.items() if sig == (dim, depth)]
    return (sam2_variant(found[0], version) if found else None), seen


def _sam2_version(shapes: Shapes) -> str | None:
    if _SAM2_PATCH not in shapes:
        return None
    return "2.1" if any(k in shapes for k in _SAM2_1_KEYS) else "2.0"


def _sam_image_size(shapes: Shapes) -> int | None:
    pos = shapes.get(_SAM_POS)
    patch = shapes.get(_SAM_PATCH)
    if pos is None or patch is None or len(pos) != 4 or len(patch) != 4:
        return None
    return int(pos[1]) * int(patch[-1])


def _format_hint(shapes: Shapes) -> str:
    if any(k.startswith("vision_encoder.") for k in shapes):
        return (
            "; the keys look like a Hugging Face transformers SAM checkpoint, which is not supported: "
            "use Meta's original release"
        )
    return ""


def parse_filename(filename: str) -> tuple[str | None, str | None]:
    """``(family, variant)`` from names like ``sam_vit_h_4b8939.pth`` or ``sam2.1_hiera_large.pt``;
    either may be ``None``."""
    name = filename.lower().rsplit("/", 1)[-1]
    if m := _SAM2_RE.search(name):
        version = "2.1" if m.group("minor") else "2.0"
        return "sam2", sam2_variant(_SIZE_WORDS[m.group("size").replace("-", "_")], version)
    if "sam2" in name or "sam_2" in name:
        return "sam2", None
    if "sam" in name and (m := _SAM_RE.search(name)):
        return "sam", f"vit_{m.group('size')}"
    return None, None


def parse_variant(variant: str, family: str | None, version: str | None = None) -> tuple[str, str]:
    """``(family, canonical variant)`` for what a user typed: ``"vit_h"``, ``"sam_vit_b"``,
    ``"sam2.1_hiera_large"``, ``"sam2-hiera-b+"``, ``"hiera_t"``; bare sizes (``"tiny"``,
    ``"large"``, ``"h"``) only with ``family``. A SAM2 size without a version takes ``version``
    (from the weights), else 2.1."""
    text = variant.strip().lower().replace("-", "_")
    fam, parsed = parse_filename(text)
    if parsed is not None and family in (None, fam):
        return fam, parsed  # type: ignore[return-value]
    # A bare size ("large", "b") means different models in the two families: only with family=.
    if family in (None, "sam") and (m := _SAM_RE.search(text)):
        return "sam", f"vit_{m.group('size')}"
    if family == "sam" and (m := _SAM_BARE_RE.match(text.removeprefix("sam_"))):
        return "sam", _SAM_SIZE_WORDS[m.group("size")]
    bare = text.removeprefix("sam2_")
    if (family == "sam2" or bare.startswith("hiera")) and (m := _SAM2_BARE_RE.match(bare)):
        return "sam2", sam2_variant(_SIZE_WORDS[m.group("size").replace("-", "_")], version or "2.1")
    known = ", ".join([*SAM_VARIANTS, *(sam2_variant(s, v) for v in SAM2_VERSIONS for s in SAM2_SIZES)])
    raise ValueError(f"unknown {family or 'SAM/SAM2'} variant {variant!r}; known: {known}")


def _family_named_by(variant: str) -> str | None:
    """The family a variant name alone implies (``vit_h``: SAM, ``hiera_l``: SAM2); None for bare sizes."""
    try:
        return parse_variant(variant, None)[0]
    except ValueError:
        return None


def identify_model(
    shapes: Shapes,
    *,
    filename: str | None = None,
    family: str = "auto",
    variant: str | None = None,
) -> ModelSpec:
    """Family and variant of a checkpoint: explicit arguments, else the weights' shapes, else the
    file name; an explicit choice that contradicts the weights is an error.

    Raises ``ValueError`` when nothing decides, asking for ``family=`` / ``variant=``.
    """
    if family not in ("auto", "sam", "sam2"):
        raise ValueError(f"family must be 'auto', 'sam' or 'sam2', got {family!r}")
    where = f" in {filename}" if filename else ""
    file_family, file_variant = parse_filename(filename) if filename else (None, None)

    weights_family = detect_family(shapes)
    if family != "auto" and weights_family not in (None, family):
        raise ValueError(f"family={family!r} but the weights{where} are a {weights_family} model")
    fam = family if family != "auto" else weights_family or file_family
    if variant is not None:
        fam = fam or parse_variant(variant, None)[0]
    if fam is None:
        sample = ", ".join(list(shapes)[:5]) or "no tensors"
        raise ValueError(
            f"could not recognise a SAM or SAM2 checkpoint{where} (first keys: {sample}); "
            f"pass family='sam' or 'sam2' and variant=... if it is one{_format_hint(shapes)}"
        )

    weights_variant, seen = detect_variant(shapes, fam)
    named_family = _family_named_by(variant) if variant is not None else None
    if named_family is not None and named_family != fam:
        # Say which model the weights are, not that the name is misspelt: the name is a real one.
        found = f" ({weights_variant})" if weights_variant else ""
        raise ValueError(
            f"variant={variant!r} names a {named_family.upper()} model, but the weights{where} are {fam.upper()}{found}; "
            "leave the variant out (it is read from the weights) or name a "
            f"{'SAM variant: ' + ', '.join(SAM_VARIANTS) if fam == 'sam' else 'SAM2 variant, e.g. sam2.1_hiera_large'}"
        )
    if variant is not None:
        # A bare SAM2 size takes its version from the weights, even when the size is non-standard.
        version = _sam2_version(shapes) if fam == "sam2" else None
        chosen = parse_variant(variant, fam, version)[1]
        if weights_variant is not None and chosen != weights_variant:
            raise ValueError(f"variant={variant!r} but the weights{where} are {weights_variant} ({seen})")
    elif weights_variant is not None:
        chosen = weights_variant
    elif file_variant is not None and file_family == fam:
        chosen = file_variant
    else:
        options = list(SAM_VARIANTS) if fam == "sam" else [sam2_variant(s, "2.1") for s in SAM2_SIZES]
        raise ValueError(
            f"could not tell which {fam} model the weights{where} are ({seen}); "
            f"pass variant=, one of {', '.join(options)}{_format_hint(shapes)}"
        )
    return ModelSpec(family=fam, variant=chosen, image_size=_sam_image_size(shapes) if fam == "sam" else None)
