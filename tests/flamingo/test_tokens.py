from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from vlp.flamingo.tokens import END_OF_CHUNK, IMAGE, PAD, add_flamingo_tokens


def word_tokenizer() -> PreTrainedTokenizerFast:
    """Five words, no pad token (like GPT-2)."""
    vocab = {word: i for i, word in enumerate(["<unk>", "a", "red", "circle", "</s>"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>")


def test_tokens_are_added_once_with_a_distinct_pad():
    tokenizer = word_tokenizer()
    tokens = add_flamingo_tokens(tokenizer)
    assert tokenizer.pad_token == PAD and tokenizer.pad_token_id not in (
        4,
        *tokens.__dict__.values(),
    )
    assert len(tokenizer) == 8
    assert add_flamingo_tokens(tokenizer) == tokens and len(tokenizer) == 8
    ids = tokenizer(f"{IMAGE}a red circle{END_OF_CHUNK}</s>")["input_ids"]
    assert ids == [tokens.image, 1, 2, 3, tokens.end_of_chunk, 4]
