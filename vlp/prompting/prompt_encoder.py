"""P-tuning's prompt encoder (Liu et al., 2021, "GPT Understands, Too", §3.2).

m trainable vectors are reparameterised into the continuous prompt h_1..h_m:

    h = MLP(BiLSTM(e_1..e_m))    (LSTM)     or    h = MLP(e_1..e_m)    (MLP)

The LSTM ties the prompt vectors to each other and the reparameterisation keeps SGD from
moving each vector only locally (the paper's "association" and "discreteness" arguments).
Field names and layer shapes follow PEFT's ``PromptEncoderConfig`` / ``PromptEncoder``
(``shared/specs/data2vec_ptuning.md`` §B.3); ``NONE`` is plain prompt tuning (Lester et
al., 2021), where the vectors are the prompt.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Reparameterization = Literal["MLP", "LSTM", "NONE"]


class PromptEncoder(nn.Module):
    """Input-independent continuous prompt of ``num_virtual_tokens`` vectors of width
    ``token_dim`` (the LM's embedding width).

    Args:
        num_virtual_tokens: m, the number of pseudo tokens [P] the prompt fills.
        token_dim: width of the LM's input embeddings.
        encoder_hidden_size: hidden width of the MLP (per direction for the LSTM);
            defaults to ``token_dim`` as in PEFT.
        encoder_reparameterization_type: ``MLP`` (PEFT's default: three linears with ReLU),
            ``LSTM`` (the paper's bi-LSTM then two linears) or ``NONE``.
        encoder_num_layers: LSTM layers (the paper uses 2).
        encoder_dropout: dropout between LSTM layers.
        init_std: std of the initial vectors e_i (CoOp's N(0, 0.02²)).
    """

    def __init__(
        self,
        num_virtual_tokens: int,
        token_dim: int,
        encoder_hidden_size: int | None = None,
        encoder_reparameterization_type: Reparameterization = "MLP",
        encoder_num_layers: int = 2,
        encoder_dropout: float = 0.0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        hidden = encoder_hidden_size or token_dim
        self.embedding = nn.Parameter(torch.randn(num_virtual_tokens, token_dim) * init_std)
        self.lstm: nn.LSTM | None = None
        self.mlp: nn.Module = nn.Identity()
        if encoder_reparameterization_type == "MLP":
            self.mlp = nn.Sequential(
                nn.Linear(token_dim, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, token_dim),
            )
        elif encoder_reparameterization_type == "LSTM":
            self.lstm = nn.LSTM(
                token_dim,
                hidden,
                num_layers=encoder_num_layers,
                dropout=encoder_dropout,
                bidirectional=True,
                batch_first=True,
            )
            self.mlp = nn.Sequential(
                nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, token_dim)
            )
        elif encoder_reparameterization_type != "NONE":
            raise ValueError(f"unknown reparameterisation {encoder_reparameterization_type!r}")

    @property
    def num_virtual_tokens(self) -> int:
        return self.embedding.shape[0]

    @torch.no_grad()
    def init_from(self, vectors: Tensor) -> None:
        """Start e_1..e_m at given vectors, e.g. the token embeddings of a hand prompt
        (with ``NONE`` the prompt then *is* that hand prompt)."""
        self.embedding.copy_(vectors)

    def forward(self) -> Tensor:
        """The prompt vectors h_1..h_m, [m, token_dim]; the same for every example."""
        states = self.embedding
        if self.lstm is not None:
            states = self.lstm(states.unsqueeze(0))[0].squeeze(0)
        return self.mlp(states)
