import pytest
import torch
import torch.nn.functional as F

from tests.tiny import TINY_TEXT
from vlp.encoders.text import TextEncoder
from vlp.evaluation.zeroshot import class_embeddings
from vlp.prompting.coop import CoOpContext, coop_template
from vlp.prompting.freezing import train_only

CLASSES = ["dog", "red circle", "square"]


def text_encoder(pooling: str = "cls") -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(config=TINY_TEXT, pooling=pooling).eval()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_context_set_to_a_hand_phrase_gives_the_hand_prompts_embeddings(pooling):
    encoder = text_encoder(pooling)
    coop = CoOpContext(encoder, CLASSES, init_text="a photo of a")
    assert coop.context.shape == (4, 32)
    encoded = coop(encoder)
    hand = encoder(**encoder.tokenize([f"a photo of a {name}." for name in CLASSES]))
    assert torch.equal(encoded.pooled, hand.pooled)
    assert torch.equal(encoded.tokens, hand.tokens)
    projection = torch.nn.Linear(32, 8)

    def embed_text(encoding):
        return F.normalize(projection(encoding.pooled), dim=-1)

    classes = coop.class_embeddings(encoder, embed_text)
    assert torch.equal(classes, class_embeddings(embed_text(hand), len(CLASSES)))
    assert classes.shape == (3, 8)


def test_class_specific_contexts_are_independent():
    encoder = text_encoder()
    coop = CoOpContext(encoder, CLASSES, num_context=3, class_specific=True)
    assert coop.context.shape == (3, 3, 32)
    before = coop(encoder).pooled
    with torch.no_grad():
        coop.context[1] += 1.0
    moved = (coop(encoder).pooled - before).abs().amax(-1) > 0
    assert moved.tolist() == [False, True, False]


def test_unified_context_is_shared_by_all_classes():
    encoder = text_encoder()
    coop = CoOpContext(encoder, CLASSES, num_context=3)
    before = coop(encoder).pooled
    with torch.no_grad():
        coop.context[0] += 1.0
    assert ((coop(encoder).pooled - before).abs().amax(-1) > 0).all()


@pytest.mark.parametrize(
    ("position", "text"),
    [("end", "[P][P][P][P] {class}."), ("middle", "[P][P] {class} [P][P]."),
     ("front", "{class} [P][P][P][P].")],
)  # fmt: skip
def test_class_name_position(position, text):
    assert coop_template(4, position).text == text


def test_only_the_context_learns_and_the_encoder_stays_frozen():
    encoder = text_encoder()
    coop = CoOpContext(encoder, CLASSES, num_context=2)
    count = train_only(encoder, coop)
    assert count.trainable == 2 * 32
    logits = coop(encoder).pooled @ torch.randn(32, 4)
    F.cross_entropy(logits.T, torch.tensor([0, 1, 2, 0])).backward()
    assert coop.context.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())
    assert set(coop.state_dict()) == {"context"}
