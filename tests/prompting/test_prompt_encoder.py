import pytest
import torch

from vlp.prompting.prompt_encoder import PromptEncoder


def changed_outputs(encoder: PromptEncoder) -> torch.Tensor:
    """Which prompt vectors move when only the first input vector e_1 is changed."""
    before = encoder()
    with torch.no_grad():
        encoder.embedding[0] += 1.0
    return (encoder() - before).abs().amax(-1) > 0


@pytest.mark.parametrize("kind", ["MLP", "LSTM", "NONE"])
def test_prompt_has_one_vector_of_lm_width_per_virtual_token(kind):
    encoder = PromptEncoder(5, 12, encoder_hidden_size=7, encoder_reparameterization_type=kind)
    assert encoder().shape == (5, 12)
    assert encoder.num_virtual_tokens == 5


def test_lstm_ties_the_prompt_vectors_together_and_mlp_does_not():
    torch.manual_seed(0)
    lstm = PromptEncoder(4, 8, encoder_reparameterization_type="LSTM")
    mlp = PromptEncoder(4, 8, encoder_reparameterization_type="MLP")
    assert changed_outputs(lstm).tolist() == [True] * 4  # bidirectional: every h_i sees e_1
    assert changed_outputs(mlp).tolist() == [True, False, False, False]


def test_parameter_count_matches_peft_documentation():
    # PEFT's P-tuning guide: bloom-560m (token_dim 1024), 20 virtual tokens, MLP hidden 128
    # → 300,288 trainable parameters = 20·1024 + (1024·128 + 128) + (128·128 + 128)
    # + (128·1024 + 1024).
    encoder = PromptEncoder(20, 1024, encoder_hidden_size=128)
    assert sum(p.numel() for p in encoder.parameters()) == 300_288


def test_lstm_layers_follow_peft_shapes():
    encoder = PromptEncoder(3, 10, encoder_hidden_size=6, encoder_reparameterization_type="LSTM")
    assert encoder.lstm.hidden_size == 6 and encoder.lstm.num_layers == 2
    assert encoder.lstm.bidirectional
    first, _, last = encoder.mlp
    assert (first.in_features, first.out_features, last.out_features) == (12, 12, 10)


def test_without_reparameterisation_the_prompt_is_its_initial_vectors():
    encoder = PromptEncoder(3, 4, encoder_reparameterization_type="NONE")
    vectors = torch.arange(12.0).view(3, 4)
    encoder.init_from(vectors)
    assert torch.equal(encoder(), vectors)


def test_unknown_reparameterisation_is_refused():
    with pytest.raises(ValueError, match="GRU"):
        PromptEncoder(3, 4, encoder_reparameterization_type="GRU")
