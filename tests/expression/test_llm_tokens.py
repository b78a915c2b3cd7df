"""Token roles with the real Qwen3 tokenizer (byte-level BPE, the one ComfyUI ships) inside FLUX.2
klein's and Z-Image's chat templates, on the RefCOCOg fixture sentences."""

from __future__ import annotations

import pickle

import pytest

from conftest import shared_path
from refam.architectures.flux2 import KLEIN_TEMPLATE
from refam.architectures.z_image import Z_IMAGE_TEMPLATE
from refam.expression import STOP_WORDS, TokenRole, tokenize_expression


def _sentences() -> list[str]:
    with open(shared_path("refcocog_fixture", "refs(umd).p"), "rb") as f:
        refs = pickle.load(f)
    return [s["sent"] for r in refs for s in r["sentences"]]


def _content_words(expression) -> list[str]:
    words = []
    for t in expression.tokens:
        if t.role is TokenRole.CONTENT and (not words or words[-1] != t.word):
            words.append(t.word)
    return words


# <|im_start|> user \n ... <|im_end|> \n <|im_start|> assistant \n (klein: then the empty think block)
@pytest.mark.parametrize(("template", "sizes"), [(KLEIN_TEMPLATE, (3, 9)), (Z_IMAGE_TEMPLATE, (3, 5))], ids=["klein", "z-image"])
def test_template_tokens_are_what_comfyui_encodes_and_roles_match_t5s(qwen_tokenizer, t5_tokenizer, template, sizes):
    before, after = (len(qwen_tokenizer(part, add_special_tokens=False)["input_ids"]) for part in template)
    assert (before, after) == sizes
    sentences = _sentences()
    assert len(sentences) == 28
    for sentence in sentences:
        te = tokenize_expression(sentence, qwen_tokenizer, template=template)
        # ComfyUI's KleinTokenizer / ZImageTokenizer encode the templated text in one call: the same ids.
        assert te.ids == qwen_tokenizer(template[0] + te.augmented + template[1])["input_ids"]
        roles = [t.role for t in te.tokens]
        assert roles[:before] == [TokenRole.EOS] * before and roles[-after:] == [TokenRole.EOS] * after
        assert roles[-after - 5 : -after] == [TokenRole.MAGNET] * 5  # "_ with to and pink", one piece each
        assert TokenRole.EOS not in roles[before : -after]
        for t in te.tokens[before:-after]:
            if t.role is TokenRole.STOP:
                assert t.word.lower() in STOP_WORDS or not t.piece.strip("\u0120")
        # The words the heatmap averages are the ones T5's tokenization keeps.
        assert _content_words(te) == _content_words(tokenize_expression(sentence, t5_tokenizer)), sentence


def test_a_bare_byte_level_space_is_a_tokenizer_symbol_like_t5s_mark(qwen_tokenizer):
    te = tokenize_expression("the 2nd cat", qwen_tokenizer, template=KLEIN_TEMPLATE)
    pieces = [(t.piece, t.role) for t in te.tokens if t.word_index >= 0]
    assert pieces[:5] == [
        ("the", TokenRole.STOP), ("\u0120", TokenRole.STOP), ("2", TokenRole.CONTENT),
        ("nd", TokenRole.CONTENT), ("\u0120cat", TokenRole.CONTENT),
    ]  # fmt: skip
