"""Token roles with Qwen-Image's real Qwen2.5 tokenizer (byte-level BPE, the files ComfyUI ships)
in Qwen-Image's prompt template, on the RefCOCOg fixture sentences."""

from __future__ import annotations

import pickle

from conftest import shared_path
from refam.architectures.qwen_image import QWEN_IMAGE_PROMPT, QWEN_IMAGE_TEMPLATE
from refam.expression import STOP_WORDS, TokenRole, tokenize_expression

# diffusers' QwenImagePipeline drops this many tokens of the templated prompt (prompt_template_encode_start_idx).
DROPPED = 34


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


def test_qwen_image_tokens_are_what_the_dit_sees_and_roles_match_t5s(qwen_tokenizer, t5_tokenizer):
    """The expression's tokens are the templated prompt's from token 34 on (what both hosts hand
    the DiT): the expression, its magnets, and the 5 tokens closing the prompt, labelled EOS."""
    before = qwen_tokenizer(QWEN_IMAGE_PROMPT[0], add_special_tokens=False)["input_ids"]
    after = qwen_tokenizer(QWEN_IMAGE_PROMPT[1], add_special_tokens=False)["input_ids"]
    assert (len(before), len(after)) == (DROPPED, 5)  # system turn + "<|im_start|>user\n"; "<|im_end|>\n...assistant\n"
    sentences = _sentences()
    assert len(sentences) == 28
    for sentence in sentences:
        te = tokenize_expression(sentence, qwen_tokenizer, template=QWEN_IMAGE_TEMPLATE)
        prompt = qwen_tokenizer(QWEN_IMAGE_PROMPT[0] + te.augmented + QWEN_IMAGE_PROMPT[1])["input_ids"]
        assert prompt[:DROPPED] == before and te.ids == prompt[DROPPED:]
        roles = te.roles
        assert roles[-5:] == [TokenRole.EOS] * 5
        assert roles[-10:-5] == [TokenRole.MAGNET] * 5  # "_ with to and pink", one piece each
        assert TokenRole.EOS not in roles[:-5]
        for t in te.tokens[:-5]:
            if t.role is TokenRole.STOP:
                assert t.word.lower() in STOP_WORDS or not t.piece.strip("\u0120")
        # The words the heatmap averages are the ones T5's tokenization keeps.
        assert _content_words(te) == _content_words(tokenize_expression(sentence, t5_tokenizer)), sentence
