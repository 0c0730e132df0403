"""LM text of pairs and documents: the layout's string, and which tokens are targets."""

from __future__ import annotations

import copy

import pytest
from transformers import AutoTokenizer

from vlp.datamodules.lm_text import LMTokenize, format_document
from vlp.encoders.text import MINILM
from vlp.flamingo import add_flamingo_tokens
from vlp.paths import resolve_model_path


@pytest.fixture(scope="module")
def tokenize() -> LMTokenize:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MINILM))
    add_flamingo_tokens(tokenizer)
    return LMTokenize(tokenizer, max_length=8, document_max_length=32)


def targets(tokenize: LMTokenize, fields: dict, row: int) -> list[tuple[str, bool]]:
    """(token, is a target) for the row's real and padded positions."""
    tokens = tokenize.tokenizer.convert_ids_to_tokens(fields["lm_ids"][row])
    return list(zip(tokens, (fields["lm_labels"][row] != -100).tolist(), strict=True))


def test_media_become_image_tags_and_each_new_medium_closes_the_previous_chunk():
    assert format_document([None, " a red circle "], "<eos>") == (
        "<image>a red circle<|endofchunk|><eos>"
    )
    layout = ["intro", None, "first.", "more", None, None, "then."]
    assert format_document(layout) == (
        "intro<image>first. more<|endofchunk|><image><|endofchunk|><image>then.<|endofchunk|>"
    )


def test_captions_predict_every_text_token_and_the_end_but_not_the_image_or_padding(tokenize):
    fields = tokenize.captions(["red circle", "a blue square left of"])
    assert targets(tokenize, fields, 0) == [
        ("[CLS]", True),  # never predicted (nothing precedes it), harmlessly labelled
        ("<image>", False),
        ("red", True),
        ("circle", True),
        ("<|endofchunk|>", True),
        ("[SEP]", True),  # the end of the caption (this tokenizer's EOS) is learned
        ("[PAD]", False),
        ("[PAD]", False),
    ]
    assert fields["lm_mask"][0].tolist() == [1] * 6 + [0] * 2
    assert fields["lm_ids"].shape[1] == 8  # the second caption is cut at max_length


def test_documents_predict_only_text_about_an_image_they_have_seen(tokenize):
    fields = tokenize([["intro", None, "red circle", None, "blue"], [None, "green"]], True)
    assert targets(tokenize, fields, 0) == [
        ("[CLS]", False),  # before the first image: no image to condition on
        ("intro", False),
        ("<image>", False),
        ("red", True),
        ("circle", True),
        ("<|endofchunk|>", True),
        ("<image>", False),
        ("blue", True),
        ("<|endofchunk|>", True),
        ("[SEP]", False),  # after the last chunk: MMC4's rule masks the document's end
    ]
    short = ["[CLS]", "<image>", "green", "<|endofchunk|>", "[SEP]"] + ["[PAD]"] * 5
    assert [t for t, _ in targets(tokenize, fields, 1)] == short
    assert fields["lm_ids"].shape[1] == 10  # documents use document_max_length


def test_text_cut_at_the_length_limit_does_not_learn_the_end_token_after_the_cut(tokenize):
    fields = tokenize.captions(["red circle", "a blue square left of a star"])
    assert targets(tokenize, fields, 1) == [
        ("[CLS]", True),
        ("<image>", False),
        ("a", True),
        ("blue", True),
        ("square", True),
        ("left", True),
        ("of", True),
        ("[SEP]", False),  # appended after the cut: the caption does not end here
    ]
    assert targets(tokenize, fields, 0)[5] == ("[SEP]", True)  # a whole caption's end is
    exact = tokenize.captions(["a blue square left"])  # fills max_length without a cut
    assert exact["lm_ids"].shape[1] == 8
    assert targets(tokenize, exact, 0)[-1] == ("[SEP]", True)
    document = tokenize([[None, "red " * 40]], True)
    assert document["lm_ids"].shape[1] == 32
    assert targets(tokenize, document, 0)[-2:] == [("red", True), ("[SEP]", False)]


def test_tags_written_in_the_text_are_text_not_media_tokens(tokenize):
    layouts = [[None, "an <image> tag"], ["see <|endofchunk|>", None, "<image>", None, "x"]]
    fields = tokenize(layouts, True)
    image, end_of_chunk = tokenize.tokenizer.convert_tokens_to_ids(["<image>", "<|endofchunk|>"])
    assert (fields["lm_ids"] == image).sum(1).tolist() == [1, 2]  # one per medium
    assert (fields["lm_ids"] == end_of_chunk).sum(1).tolist() == [1, 2]
    assert targets(tokenize, fields, 0)[:9] == [
        ("[CLS]", False),
        ("<image>", False),
        ("an", True),
        ("<", True),
        ("image", True),
        (">", True),
        ("tag", True),
        ("<|endofchunk|>", True),
        ("[SEP]", False),
    ]


def test_the_tokenize_callable_pickles_for_data_workers(tokenize):
    copied = copy.deepcopy(tokenize)
    assert (
        copied.captions(["red"])["lm_ids"].tolist() == tokenize.captions(["red"])["lm_ids"].tolist()
    )
