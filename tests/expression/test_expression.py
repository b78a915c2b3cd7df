"""Token roles and word alignment with the real T5 tokenizer (refam.expression)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, shared_path
from refam.expression import (
    DEFAULT_MAGNETS,
    NLTK_STOP_WORDS,
    STOP_WORDS,
    TokenizedExpression,
    TokenRole,
    Word,
    split_words,
    tokenize_expression,
)

C, S, M, E, P = TokenRole.CONTENT, TokenRole.STOP, TokenRole.MAGNET, TokenRole.EOS, TokenRole.PAD


def table(te: TokenizedExpression) -> list[tuple[str, TokenRole, int, str]]:
    return [(t.piece, t.role, t.word_index, t.word) for t in te.tokens]


def check_alignment(te: TokenizedExpression) -> None:
    """Invariants every tokenization must satisfy."""
    n_words = len(te.words)
    for t in te.tokens:
        if t.role in (E, P):
            assert (t.word_index, t.word) == (-1, "")
        else:
            assert 0 <= t.word_index < n_words
            assert t.word == te.words[t.word_index].text
            # Roles follow the word's position: magnets come after the user's words.
            assert (t.role is M) == (t.word_index >= te.expression_word_count)
    # Pieces of one word share its role; a bare word-start mark in the user's text is the paper's
    # tokenizer symbol, a stop token.
    by_word: dict[int, set[TokenRole]] = {}
    for t in te.tokens:
        if t.word_index >= 0 and not (t.piece == "\u2581" and t.role is S):
            by_word.setdefault(t.word_index, set()).add(t.role)
    assert all(len(roles) == 1 for roles in by_word.values())
    assert all(t.role in (S, M) for t in te.tokens if t.piece == "\u2581")
    # Padding only at the end.
    roles = te.roles
    assert all(r is P for r in roles[te.valid_length :])
    assert P not in roles[: te.valid_length]


# ---------------------------------------------------------------------------------------------- words


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the cat on the left.", ["the", "cat", "on", "the", "left", "."]),
        ("cat's left-hand paw", ["cat", "'", "s", "left", "-", "hand", "paw"]),
        ("(cat:1.2)", ["(", "cat", ":", "1", ".", "2", ")"]),
        ("don't", ["don", "'", "t"]),
        ("2nd man", ["2nd", "man"]),
        ("__ _a", ["_", "_", "_", "a"]),
        ("  héllo   wörld  ", ["héllo", "wörld"]),
        ("cafe\u0301 ok", ["cafe\u0301", "ok"]),
        ("...", [".", ".", "."]),
    ],
)
def test_split_words(text: str, expected: list[str]) -> None:
    words = split_words(text)
    assert [w.text for w in words] == expected
    assert all(text[w.start : w.end] == w.text for w in words)


def test_split_words_indices_survive_strip() -> None:
    raw = "   the cat on the left  "
    assert [w.text for w in split_words(raw)] == [w.text for w in split_words(raw.strip())]


# ---------------------------------------------------------------------------------------- stop words


def test_stop_words_match_paper_list() -> None:
    assert len(NLTK_STOP_WORDS) == 127
    assert len(STOP_WORDS) == 131
    assert {"_", ";", ".", "-"} <= STOP_WORDS
    for w in ("with", "the", "s", "t", "don", "i", "now", "above", "below", "between", "to", "and"):
        assert w in STOP_WORDS
    for w in ("left", "right", "pink", "red", "cat", "top", "one", ",", "'"):
        assert w not in STOP_WORDS
    assert all(w == w.lower() for w in STOP_WORDS)


def test_stop_words_equal_paper_text() -> None:
    paper = REPO_ROOT.parent / "shared" / "paper" / "refam-paper.txt"
    if not paper.exists():
        pytest.skip("paper text not available")
    text = paper.read_text()
    start = text.index("i; me; my;")
    block = text[start : text.index("-;", start) + 2]
    entries = [e.strip() for e in block.split(";")]
    words = {e for e in entries if e}
    # The PDF lost "_" (an empty entry is left where it was) and ";" cannot survive the split.
    assert entries.count("") == 2  # the lost "_" and the trailing separator
    assert words | {"_", ";"} == STOP_WORDS


# ------------------------------------------------------------------------------------------- tokens


def test_pieces_roles_and_eos(t5_tokenizer) -> None:
    te = tokenize_expression("the cat on the left.", t5_tokenizer)
    assert te.text == "the cat on the left."
    assert te.augmented == "the cat on the left. _ with to and pink"
    assert te.expression_word_count == 6
    assert table(te) == [
        ("▁the", S, 0, "the"),
        ("▁cat", C, 1, "cat"),
        ("▁on", S, 2, "on"),
        ("▁the", S, 3, "the"),
        ("▁left", C, 4, "left"),
        (".", S, 5, "."),  # T5 splits "left." into "▁left" + "."
        ("▁", M, 6, "_"),  # "_" -> ['▁', '_'], both pieces are the magnet
        ("_", M, 6, "_"),
        ("▁with", M, 7, "with"),
        ("▁to", M, 8, "to"),
        ("▁and", M, 9, "and"),
        ("▁pink", M, 10, "pink"),
        ("</s>", E, -1, ""),
    ]
    # The ids are exactly what the tokenizer gives for the augmented text.
    assert te.ids == t5_tokenizer(te.augmented)["input_ids"]
    assert te.ids[-1] == t5_tokenizer.eos_token_id
    assert [i for i, r in enumerate(te.roles) if r is E] == [len(te) - 1]
    assert te.valid_length == len(te) == 13
    assert not te.truncated and te.warnings == []
    assert te.keep_mask() == [r is C for r in te.roles]
    check_alignment(te)


def test_underscore_magnet_is_two_magnet_pieces(t5_tokenizer) -> None:
    te = tokenize_expression("dog", t5_tokenizer, magnets=("_",))
    assert table(te) == [("▁dog", C, 0, "dog"), ("▁", M, 1, "_"), ("_", M, 1, "_"), ("</s>", E, -1, "")]


def test_magnet_words_in_user_text_keep_their_own_role(t5_tokenizer) -> None:
    te = tokenize_expression("the pink cat with a hat", t5_tokenizer)
    user = [(t.word, t.role) for t in te.tokens if 0 <= t.word_index < te.expression_word_count]
    assert dict(user)["pink"] is C  # "pink" is no stop word: content in the user's text
    assert dict(user)["with"] is S
    magnets = [t.word for t in te.tokens if t.role is M]
    assert magnets == ["_", "_", "with", "to", "and", "pink"]
    check_alignment(te)


def test_no_magnets_ablation(t5_tokenizer) -> None:
    te = tokenize_expression("the cat on the left", t5_tokenizer, magnets=())
    assert te.augmented == te.text == "the cat on the left"
    assert M not in te.roles
    assert te.roles == [S, C, S, S, C, E]
    check_alignment(te)


def test_custom_magnets_and_stop_words(t5_tokenizer) -> None:
    te = tokenize_expression("The Cat", t5_tokenizer, magnets=["blue", "of"], stop_words={"CAT"})
    assert te.augmented == "The Cat blue of"
    assert [(t.word, t.role) for t in te.tokens] == [("The", C), ("Cat", S), ("blue", M), ("of", M), ("", E)]


@pytest.mark.parametrize(
    ("word", "pieces"),
    [("giraffe", ["▁", "gir", "a", "ffe"]), ("skateboarder", ["▁skate", "board", "er"])],
)
def test_multi_piece_words_share_word_and_role(t5_tokenizer, word: str, pieces: list[str]) -> None:
    te = tokenize_expression(f"the {word} on the left", t5_tokenizer)
    of_word = [t for t in te.tokens if t.word == word]
    assert [t.piece for t in of_word] == pieces
    assert {t.word_index for t in of_word} == {1}
    assert {t.role for t in of_word if t.piece != "\u2581"} == {C}  # a bare mark is the tokenizer's symbol
    check_alignment(te)


def test_apostrophes_and_hyphens(t5_tokenizer) -> None:
    te = tokenize_expression("the cat's left-hand paw", t5_tokenizer, magnets=())
    assert [(t.piece, t.word, t.role) for t in te.tokens] == [
        ("▁the", "the", S),
        ("▁cat", "cat", C),
        ("'", "'", C),  # the paper's list has no apostrophe
        ("s", "s", S),  # ... but has "s"
        ("▁left", "left", C),
        ("-", "-", S),
        ("hand", "hand", C),
        ("▁", "paw", S),  # the bare word-start mark: the tokenizer's symbol
        ("paw", "paw", C),
        ("</s>", "", E),
    ]


def test_comfy_weight_syntax_is_literal(t5_tokenizer) -> None:
    te = tokenize_expression("(cat:1.2)", t5_tokenizer, magnets=())
    assert te.text == "(cat:1.2)"
    assert [w.text for w in te.words] == ["(", "cat", ":", "1", ".", "2", ")"]
    # T5 keeps "1.2" as one piece spanning three words: it takes the first word, and is content
    # because some of those words are.
    assert table(te) == [
        ("▁(", C, 0, "("),
        ("cat", C, 1, "cat"),
        (":", C, 2, ":"),
        ("1.2", C, 3, "1"),
        (")", C, 6, ")"),
        ("</s>", E, -1, ""),
    ]


@pytest.mark.parametrize("length", [256, 512])
def test_padding(t5_tokenizer, length: int) -> None:
    te = tokenize_expression("the cat on the left", t5_tokenizer, pad_to=length)
    assert len(te) == len(te.ids) == length
    assert te.valid_length == 12
    assert te.roles[te.valid_length :] == [P] * (length - 12)
    assert set(te.ids[te.valid_length :]) == {t5_tokenizer.pad_token_id}
    assert te.roles[te.valid_length - 1] is E
    assert te.attention_mask == [1] * 12 + [0] * (length - 12)
    assert sum(te.keep_mask()) == 2  # cat, left
    # Padding is dropped even if the caller forgets it.
    assert sum(te.keep_mask(drop_roles=())) == 12
    check_alignment(te)


def test_expressions_of_different_lengths_pad_to_one_length(t5_tokenizer) -> None:
    exprs = ["cat", "the giraffe on the far left", "a man in a red shirt holding a bat"]
    batch = [tokenize_expression(e, t5_tokenizer) for e in exprs]
    assert [te.text for te in batch] == exprs
    lengths = [len(te) for te in batch]
    assert len(set(lengths)) == 3
    for te in batch:
        check_alignment(te)

    padded = [tokenize_expression(e, t5_tokenizer, pad_to=256) for e in exprs]
    assert {len(te) for te in padded} == {256}
    assert [te.valid_length for te in padded] == lengths
    assert [te.roles[: te.valid_length] for te in padded] == [te.roles for te in batch]

    # Padded to the longest of them (one batched forward pass), each keeps its own roles.
    longest = max(len(tokenize_expression(e, t5_tokenizer, magnets=())) for e in exprs)
    to_longest = [tokenize_expression(e, t5_tokenizer, pad_to=longest, magnets=()) for e in exprs]
    assert {len(te) for te in to_longest} == {max(te.valid_length for te in to_longest)}


@pytest.mark.parametrize("bad", ["", "   ", "\n\t "])
def test_empty_expression_raises(t5_tokenizer, bad: str) -> None:
    with pytest.raises(ValueError, match="expression is empty"):
        tokenize_expression(bad, t5_tokenizer)


def test_bad_arguments(t5_tokenizer) -> None:
    with pytest.raises(TypeError, match="NoneType"):
        tokenize_expression(None, t5_tokenizer)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        tokenize_expression(b"cat", t5_tokenizer)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a str"):
        tokenize_expression("cat", t5_tokenizer, magnets="pink")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        tokenize_expression("cat", t5_tokenizer, magnets=("pink", " "))
    with pytest.raises(ValueError, match="max_length"):
        tokenize_expression("cat", t5_tokenizer, max_length=0)
    with pytest.raises(ValueError, match="pad_to"):
        tokenize_expression("cat", t5_tokenizer, pad_to=-3)


@pytest.mark.parametrize("expr", ["it", "that", "this", "the", "it is there."])
def test_stop_words_only_expression_warns_and_keeps_its_tokens(t5_tokenizer, expr: str) -> None:
    te = tokenize_expression(expr, t5_tokenizer)
    assert len(te.warnings) == 1 and "only stop words" in te.warnings[0]
    user = [t for t in te.tokens if 0 <= t.word_index < te.expression_word_count]
    assert user and all(t.role is C for t in user)
    keep = te.keep_mask()
    assert [t for t, k in zip(te.tokens, keep, strict=True) if k] == user  # magnets and EOS still dropped
    # Without the relabelling these would all be STOP.
    assert all(w.text.lower() in STOP_WORDS for w in te.words[: te.expression_word_count])


def test_truncation_keeps_magnets_and_eos(t5_tokenizer) -> None:
    expr = " ".join(["the big giraffe"] * 40)  # 40 * (1 + 1 + 4) = 240 tokens
    full = tokenize_expression(expr, t5_tokenizer)
    assert len(full) == 240 + 6 + 1 and not full.truncated

    te = tokenize_expression(expr, t5_tokenizer, max_length=34)
    assert te.truncated
    assert te.text == expr  # the text fields describe the full input
    assert te.pieces[-7:] == ["▁", "_", "▁with", "▁to", "▁and", "▁pink", "</s>"]
    assert te.roles[-7:] == [M] * 6 + [E]
    # 34 - 7 = 27 tokens are left for the text: 4 * "the big giraffe" (24) + "the big" (26) + the first
    # piece of "giraffe". The cut backs off to the word boundary rather than keep a piece of a word.
    user = [t for t in te.tokens if 0 <= t.word_index < te.expression_word_count]
    assert len(user) == 26 and user[-1].piece == "▁big"
    assert len(te) == 33
    assert te.ids[:26] == full.ids[:26]
    msg = [w for w in te.warnings if "too long" in w]
    assert len(msg) == 1 and "dropped 214 of its 240 tokens" in msg[0] and "'big'" in msg[0]
    check_alignment(te)


def test_truncation_with_pad_to(t5_tokenizer) -> None:
    expr = " ".join(["cat"] * 300)
    te = tokenize_expression(expr, t5_tokenizer, pad_to=256)
    assert len(te) == te.valid_length == 256 and te.truncated
    assert te.roles[-7:] == [M] * 6 + [E]
    assert te.roles[:249] == [C] * 249
    assert "dropped 51 of its 300 tokens" in te.warnings[0]

    # Default max_length=512 with diffusers-style padding.
    te = tokenize_expression(" ".join(["cat"] * 600), t5_tokenizer, pad_to=512)
    assert len(te) == 512 and te.truncated and te.roles[-1] is E and P not in te.roles

    # max_length caps the real tokens, pad_to sets the padded length.
    short = tokenize_expression("cat", t5_tokenizer, pad_to=256, max_length=8)
    assert len(short) == 256 and short.valid_length == 8 and not short.truncated

    with pytest.raises(ValueError, match="magnets and special tokens alone"):
        tokenize_expression("cat", t5_tokenizer, max_length=7)


def test_unknown_characters_warn(t5_tokenizer) -> None:
    te = tokenize_expression("the cat {x}", t5_tokenizer, magnets=())
    assert any("unknown" in w for w in te.warnings)
    assert t5_tokenizer.unk_token_id in te.ids
    check_alignment(te)


class SlowTokenizer:
    """A tokenizer without offsets, like Hugging Face's Python (slow) tokenizers."""

    def __init__(self, fast) -> None:
        self.fast = fast

    def __getattr__(self, name):
        return getattr(self.fast, name)

    def __call__(self, text, **kwargs):
        if kwargs.pop("return_offsets_mapping", False):
            raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
        return self.fast(text, **kwargs)


@pytest.mark.parametrize(
    "expr",
    [
        "the cat on the left.",
        "a skateboarder with a giraffe",
        "(cat:1.2)",
        "the cat's left-hand paw",
        "x {y}",
    ],
)
def test_tokenizer_without_offsets_gives_same_roles(t5_tokenizer, expr: str) -> None:
    fast = tokenize_expression(expr, t5_tokenizer)
    slow = tokenize_expression(expr, SlowTokenizer(t5_tokenizer))
    assert table(slow) == table(fast)


def test_refcocog_sentences_align(t5_tokenizer) -> None:
    with open(shared_path("refcocog_fixture", "refs(umd).p"), "rb") as f:
        refs = pickle.load(f)
    sentences = [s[key] for r in refs for s in r["sentences"] for key in ("sent", "raw")]
    assert len(sentences) == 56
    for sentence in sentences:
        te = tokenize_expression(sentence, t5_tokenizer, pad_to=256)
        check_alignment(te)
        assert te.ids[: te.valid_length] == t5_tokenizer(te.augmented)["input_ids"]
        assert te.words[: te.expression_word_count] == split_words(te.text)
        for t in te.tokens:
            if t.role is C:
                assert t.word.lower() not in STOP_WORDS or "only stop words" in "".join(te.warnings)
            if t.role is S:
                assert t.word.lower() in STOP_WORDS or t.piece == "\u2581"
        # Every user word is reached by some token (nothing silently lost).
        reached = {t.word_index for t in te.tokens if t.word_index >= 0}
        assert set(range(len(te.words))) - reached <= {
            i for i, w in enumerate(te.words) if not w.text.isalnum()
        }


def test_word_dataclass_and_defaults() -> None:
    assert split_words("a b")[1] == Word("b", 2, 3)
    assert DEFAULT_MAGNETS == ("_", "with", "to", "and", "pink")
    assert TokenRole("magnet") is M and M == "magnet"


def test_import_does_not_pull_torch_or_spacy() -> None:
    code = (
        "import sys, refam.expression; "
        "bad = [m for m in ('torch', 'spacy', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_bare_word_start_mark_is_the_papers_tokenizer_symbol(t5_tokenizer):
    """T5 emits '▁' as its own piece before '_' and some punctuation. The paper's list names the
    tokenizer's symbols ('_ ; . -'), so a bare mark in the user's text is a stop token, in the
    appended magnet '_' a magnet; punctuation the list does not name (',' and '?') is not a stop word."""
    from refam.expression import TokenRole

    roles = {}
    expr = tokenize_expression("the _ cat, left?", t5_tokenizer)
    for token in expr.tokens:
        roles.setdefault(token.piece, []).append(token.role)
    assert roles["▁"] == [TokenRole.STOP, TokenRole.MAGNET]
    assert roles["_"] == [TokenRole.STOP, TokenRole.MAGNET]
    assert roles[","] == [TokenRole.CONTENT] and roles["?"] == [TokenRole.CONTENT]
    assert roles["▁cat"] == [TokenRole.CONTENT]
