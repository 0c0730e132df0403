"""Sizes of the tiny encoders that tests build instantly offline."""

TINY_TEXT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}
TINY_VISION = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
