import torch
from torch import nn

from tests.flamingo.tiny_lm import tiny_lm
from vlp.prompting.freezing import ParameterCount, train_only
from vlp.prompting.prompt_encoder import PromptEncoder
from vlp.prompting.template import PromptTemplate


def test_frozen_lm_is_bit_identical_after_adamw_with_weight_decay_while_the_prompt_learns():
    lm, tokenizer = tiny_lm("gpt2")
    encoder = PromptEncoder(3, 32, encoder_hidden_size=16, encoder_reparameterization_type="LSTM")
    head = nn.Linear(32, 2)
    count = train_only(lm, encoder, head)
    expected = sum(p.numel() for p in [*encoder.parameters(), *head.parameters()])
    assert count.trainable == expected
    assert count.total == expected + sum(p.numel() for p in lm.parameters())
    frozen = {name: p.clone() for name, p in lm.state_dict().items()}
    trained = [p.clone() for p in [*encoder.parameters(), *head.parameters()]]
    everything = [*lm.parameters(), *encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(everything, lr=1e-2, weight_decay=0.1)
    batch = PromptTemplate("[P][P] a picture [P] caption:").batch(
        tokenizer, [{}, {}], targets=["a red circle", "two"]
    )
    for _ in range(3):
        out = lm(
            inputs_embeds=batch.inputs_embeds(lm.get_input_embeddings(), encoder()),
            attention_mask=batch.attention_mask,
            labels=batch.labels,
            output_hidden_states=True,
        )
        head_loss = nn.functional.cross_entropy(
            head(out.hidden_states[-1][:, 0]), torch.tensor([0, 1])
        )
        optimizer.zero_grad()
        (out.loss + head_loss).backward()
        optimizer.step()
    assert all(torch.equal(frozen[name], p) for name, p in lm.state_dict().items())
    now = [*encoder.parameters(), *head.parameters()]
    assert all(not torch.equal(before, after) for before, after in zip(trained, now, strict=True))


def test_parameter_count_reads_as_a_share():
    assert str(ParameterCount(trainable=1_234, total=1_000_000)) == (
        "1,234 of 1,000,000 parameters trainable (0.123 %)"
    )


def test_trainable_modules_inside_the_model_stay_trainable():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    count = train_only(model, model[1])
    assert (count.trainable, count.total) == (4, 13)
    assert not model[0].weight.requires_grad and model[1].weight.requires_grad
