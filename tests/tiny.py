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


def tiny_data(train, tokenize):
    """A data module over ``train`` with 32 px images, batches of 4, no workers."""
    from vlp.datamodules.datamodule import VLPDataModule

    return VLPDataModule(train=train, batch_size=4, num_workers=0, image_size=32, tokenize=tokenize)


def quiet_trainer(**kwargs):
    """A CPU Trainer without checkpoints, progress bar or summary (and no logger unless given)."""
    from lightning.pytorch import Trainer

    defaults = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return Trainer(**{**defaults, **kwargs})
