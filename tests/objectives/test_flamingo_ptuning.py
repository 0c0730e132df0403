"""P-tuned Flamingo: where the prompts go, equivalence with hand prompts, what trains."""

from __future__ import annotations

import torch

from tests.objectives.flamingo_tiny import TINY_LM, open_gates, tiny_data, tiny_model
from vlp.datamodules.kshot import KShot
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders.text import MINILM
from vlp.flamingo.generation import Decoding, generate
from vlp.flamingo.loss import IGNORE
from vlp.objectives import flamingo_ptuning
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.flamingo import CrossAttentionConfig, Flamingo, ResamplerConfig
from vlp.objectives.flamingo_ptuning import FlamingoPromptTuning
from vlp.prompting.prompt_encoder import PromptEncoder

SIZES = {
    "lm_config": TINY_LM,
    "tokenizer": MINILM,
    "resampler": ResamplerConfig(depth=1, heads=2, dim_head=8, num_latents=4),
    "cross_attention": CrossAttentionConfig(heads=2, dim_head=8),
}
HAND = {"caption": "a photo of an", "vqa": "the image answer"}  # one word per slot


def ptuned(**kwargs) -> FlamingoPromptTuning:
    return FlamingoPromptTuning(**SIZES, **kwargs)


def scenes_batch(model, size: int = 4, **kwargs) -> dict:
    data = tiny_data(model, train=SyntheticScenes("train", size, image_size=32), shuffle=False)
    return next(iter(data.train_dataloader()))


def hand_encoders(objective: FlamingoPromptTuning) -> dict[str, torch.Tensor]:
    """Prompt encoders whose outputs are the hand prompts' token embeddings; their ids."""
    tokenizer, embedding = objective.lm.tokenizer, objective.lm.lm.get_input_embeddings()
    hand_ids = {}
    for task, text in HAND.items():
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
        encoder = PromptEncoder(
            len(ids), embedding.weight.shape[1], encoder_reparameterization_type="NONE"
        )
        encoder.init_from(embedding(ids).detach())
        objective.prompts[task] = encoder
        hand_ids[task] = ids
    return hand_ids


def test_the_template_puts_slots_around_the_image_and_labels_only_the_target():
    objective = ptuned()
    tiny_model([objective])
    tokenizer = objective.lm.tokenizer
    batch = objective.prompted_batch("vqa", [{"question": "what colour?"}], ["red"])
    tokens = tokenizer.convert_ids_to_tokens(batch.input_ids[0])
    assert tokens == ["[CLS]", "[UNK]", "<image>", "[UNK]", "question", ":", "what", "colour",
                      "?", "[UNK]", "short", "answer", ":", "red", "<|endofchunk|>", "[SEP]"]  # fmt: skip
    assert batch.slot_mask[0].nonzero().flatten().tolist() == [1, 3, 9]
    labelled = (batch.labels[0] != IGNORE).nonzero().flatten().tolist()
    assert labelled == [13, 14, 15]  # the answer, <|endofchunk|> and [SEP]


def test_tags_written_in_questions_and_targets_stay_text(monkeypatch):
    objective = ptuned()
    model = tiny_model([objective])
    tokens = objective.lm.tokens
    questions = [{"question": "is <image> here?"}, {"question": "<|endofchunk|>?"}]
    batch = objective.prompted_batch("vqa", questions, ["<image>", "a <|endofchunk|> b"])
    assert (batch.input_ids == tokens.image).sum(1).tolist() == [1, 1]
    assert (batch.input_ids == tokens.end_of_chunk).sum(1).tolist() == [1, 1]
    fed = []
    monkeypatch.setattr(
        flamingo_ptuning, "generate_from_ids", lambda _, __, ids, *a: fed.append(ids)
    )
    objective.generate_prompted("vqa", torch.zeros(2, 1, 4, model.encoders.vision.width), questions)
    assert (fed[0] == tokens.image).sum(1).tolist() == [1, 1]
    assert (fed[0] == tokens.end_of_chunk).sum().item() == 0


def test_prompt_vectors_reach_the_lm_at_the_slots_of_the_flamingo_batch():
    objective = ptuned(reparameterization="LSTM")
    model = tiny_model([objective]).eval()
    batch = objective.prompted_batch("caption", [{}, {}], ["a red circle", "two"])
    visual = torch.randn(2, 1, 4, model.encoders.vision.width)
    seen = {}
    first_layer = objective.lm.lm.transformer.h[0]
    handle = first_layer.register_forward_pre_hook(lambda _, args: seen.update(x=args[0]))
    objective.prompted_logits("caption", batch, visual)
    handle.remove()
    positions = objective.lm.lm.transformer.wpe(torch.arange(batch.input_ids.shape[1]))
    embeds = seen["x"] - positions  # GPT-2's first layer input: token + position embeddings
    prompts = objective.prompts["caption"]()
    assert batch.slot_mask.sum(1).tolist() == [4, 4]
    torch.testing.assert_close(embeds[batch.slot_mask].view(2, 4, -1), prompts.expand(2, -1, -1))
    words = objective.lm.lm.get_input_embeddings()(batch.input_ids)
    torch.testing.assert_close(embeds[~batch.slot_mask], words[~batch.slot_mask])


def test_with_the_hand_prompts_embeddings_the_loss_and_logits_are_the_hand_prompted_flamingos():
    objective = ptuned()
    model = tiny_model([objective]).eval()
    open_gates(objective)
    hand_ids = hand_encoders(objective)
    batch = scenes_batch(model)
    terms = objective(model.step(batch))
    assert set(terms) == {"caption_loss", "vqa_loss"}
    # the same questions again: the objective draws one per image from the global generator
    torch.manual_seed(0)
    terms = objective(model.step(batch))
    torch.manual_seed(0)
    asked = [qa[int(torch.randint(len(qa), ()))] for qa in batch["questions"] if qa]
    examples = {
        "caption": ([{}] * 4, [c[0] for c in batch["captions"]]),
        "vqa": ([{"question": qa["question"]} for qa in asked], [qa["answer"] for qa in asked]),
    }
    visual = objective.resample_images(model.encoders.vision(batch["images"]).tokens)[:, None]
    for task, (values, targets) in examples.items():
        prompted = objective.prompted_batch(task, values, targets)
        hand = prompted.input_ids.clone()
        hand[prompted.slot_mask] = hand_ids[task].repeat(len(hand))
        hand_batch = {**batch, "lm_ids": hand, "lm_mask": prompted.attention_mask,
                      "lm_labels": prompted.labels}  # fmt: skip
        expected = Flamingo.forward(objective, model.step(hand_batch))["lm_loss"]
        assert torch.equal(terms[f"{task}_loss"], expected)
        logits = objective.prompted_logits(task, prompted, visual)
        assert torch.equal(logits, objective.lm(hand, visual, prompted.attention_mask).logits)


def test_without_slots_the_caption_text_is_stage_one_flamingos_exactly():
    """The caption template "<image>" gives Flamingo's own training sequence and labels."""
    objective = ptuned(tasks=("caption",), caption_template="<image>")
    model = tiny_model([objective]).eval()
    open_gates(objective)
    batch = scenes_batch(model)
    captions = [c[0] for c in batch["captions"]]
    reference = objective.lm_tokenize.captions(captions)
    prompted = objective.prompted_batch("caption", [{}] * 4, captions)
    assert torch.equal(prompted.input_ids, reference["lm_ids"])
    assert torch.equal(prompted.labels[:, 1:], reference["lm_labels"][:, 1:])
    loss = objective(model.step(batch))["caption_loss"]
    assert torch.equal(
        loss, Flamingo.forward(objective, model.step({**batch, **reference}))["lm_loss"]
    )


def test_only_the_prompt_encoders_change_under_adamw_with_weight_decay():
    objective = ptuned(reparameterization="LSTM", encoder_hidden_size=8)
    model = tiny_model([Contrastive(weight=0.0, embed_dim=8), objective])
    assert model.frozen and not model.encoders.vision.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if ".prompts." in n}
    before = {n: t.clone() for n, t in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    assert objective.prompts.training and not objective.lm.training
    assert not objective.resampler.training
    batch = scenes_batch(model)
    for _ in range(3):
        terms = objective(model.step(batch))
        optimizer.zero_grad()
        (terms["caption_loss"] + terms["vqa_loss"]).backward()
        optimizer.step()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]) != (".prompts." in name), name


def test_kshot_training_sets_are_reproducible_and_carry_questions():
    objective = ptuned()
    model = tiny_model([objective])
    scenes = SyntheticScenes("train", 48, image_size=32)

    def shots(k: int, seed: int) -> list[int]:
        # batches of 6: the 6 classes' k shots fill whole batches (training drops the last)
        data = tiny_data(model, train=scenes, kshot=KShot(k, seed), shuffle=False, batch_size=6)
        batches = list(data.train_dataloader())
        assert all(qa for b in batches for qa in b["questions"])
        return sorted(i for b in batches for i in b["image_ids"].tolist())

    one = shots(1, seed=1)
    assert one == shots(1, seed=1) and one != shots(1, seed=2)
    labels = [scenes[i].label for i in one]
    assert sorted(labels) == list(range(6))  # one image per class
    assert len(shots(4, seed=1)) == 4 * len(labels)


def test_learned_prompts_generate_like_the_hand_prompt_they_equal():
    objective = ptuned()
    model = tiny_model([objective]).eval()
    open_gates(objective)
    hand_encoders(objective)
    visual = torch.randn(2, 1, 4, model.encoders.vision.width)
    queries = [{"question": "what colour is the circle?"}, {"question": "how many?"}]
    first, second, third = HAND["vqa"].split()  # spaces keep WordPiece from joining words
    prompts = [f"{first}<image>{second} Question:{q['question']} {third} Short answer:"
               for q in queries]  # fmt: skip
    for decoding in (Decoding(max_new_tokens=4, num_beams=2), Decoding(4, 1, use_cache=False)):
        learned = objective.generate_prompted("vqa", visual, queries, decoding)
        assert learned == generate(objective.lm, visual, prompts, decoding)
