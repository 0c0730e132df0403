"""SigLIP: image–text alignment with a sigmoid loss on every pair (Zhai et al. 2023, eq. 1).

    logit_ij = t · ⟨x_i, y_j⟩ + b,   t = exp(t′)
    L = −1/|B| Σ_i Σ_j log σ(z_ij · logit_ij),   z_ij = 1 for a matching pair, −1 otherwise

Each pair is an independent binary decision, so no softmax normalises over the batch
(the paper: t′ = log 10 and b = −10 at initialisation, against the many negatives at the
start). Rows are this rank's images, columns every rank's texts, gathered with gradients:
each pair counts once over the ranks, and DDP's average gives the global batch's gradient.
With ``image_id_positives`` every caption of the same image is a positive pair.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp.distributed import global_mean
from vlp.objectives.contrastive import ImageTextSpace
from vlp.step import Step


class SigmoidContrastive(ImageTextSpace):
    """SigLIP's pairwise sigmoid loss in the shared image–text space.

    Args:
        weight: weight of ``sigmoid_loss`` in the total.
        embed_dim: width of the shared embedding space.
        scale: initial t (10), learnt through t′ = log t.
        bias: initial b (−10), learnt.
        image_id_positives: treat captions of the same image as positives.
    """

    name = "siglip"

    def __init__(
        self,
        weight: float = 1.0,
        embed_dim: int = 256,
        scale: float = 10.0,
        bias: float = -10.0,
        image_id_positives: bool = True,
    ) -> None:
        super().__init__(weight, embed_dim, image_id_positives)
        if scale <= 0:
            raise ValueError(f"siglip scale must be positive, got {scale}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))  # t′
        self.bias = nn.Parameter(torch.tensor(bias))  # b

    @property
    def temperature(self) -> Tensor:
        """1/t, the τ that ITM's hard negatives are drawn at when it reuses this space's."""
        return torch.exp(-self.log_scale)

    def score_weights(self, prefix: str) -> dict[str, str]:
        return {"log_scale": f"{prefix}.log_scale", "bias": f"{prefix}.bias"}  # t′, b

    def forward(self, step: Step) -> dict[str, Tensor]:
        image, text = step.embedded(self)  # x_i, y_j
        all_text, offset = step.gather(text)
        logits = image @ all_text.T * self.log_scale.exp() + self.bias
        if self.image_id_positives:
            positive = step.image_ids[:, None] == step.gather_no_grad(step.image_ids)[None, :]
        else:
            local = torch.arange(image.shape[0], device=image.device) + offset
            positive = F.one_hot(local, all_text.shape[0]).bool()
        signs = positive.float() * 2 - 1  # z_ij
        loss = global_mean(-F.logsigmoid(signs * logits).sum(), image.shape[0])
        return {
            "sigmoid_loss": loss,
            "scale": self.log_scale.detach().exp(),
            "bias": self.bias.detach(),
        }
