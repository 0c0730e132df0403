"""CMA / ITC: symmetric InfoNCE between image and text embeddings.

CLIP (Radford et al. 2021), ALBEF eq. (1)–(3) and TCL's CMA without momentum
distillation (``shared/specs/tcl_albef.md`` §1):

    s(I, T) = ⟨g_v(v_cls), g_w(w_cls)⟩ / τ
    L_itc = ½ [ H(y_i2t, softmax(s_i2t)) + H(y_t2i, softmax(s_t2i)) ]

Negatives are the texts/images of every rank, gathered with gradients (local
rows × global columns). With ``image_id_positives`` every caption of the same
image is a positive: y puts mass 1/|P(i)| on each of them (ALBEF's retrieval
targets), so paraphrases are never pushed apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp.distributed import global_mean
from vlp.encoders import Encoders
from vlp.encoding import Encoding
from vlp.objectives.base import Objective
from vlp.step import Step


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """H(targets, softmax(logits)) averaged over the global batch's rows (targets rows sum
    to 1): ranks may hold different numbers of rows, and DDP averages their gradients."""
    return global_mean(-(targets * F.log_softmax(logits, dim=-1)).sum(), logits.shape[0])


def positive_targets(row_ids: Tensor, column_ids: Tensor) -> Tensor:
    """Row-normalised indicator of equal image ids: y_ik = 1[id_i = id_k] / Σ_k 1[id_i = id_k]."""
    same = (row_ids[:, None] == column_ids[None, :]).float()
    return same / same.sum(-1, keepdim=True)


class ImageTextSpace(Objective):
    """An objective that owns the shared image–text space: projections g_v, g_w of the
    towers' pooled outputs onto the unit sphere (retrieval, zero-shot and ITM's hard
    negatives read it).

    Args:
        weight: this objective's weight in the total.
        embed_dim: width of the shared embedding space (ALBEF: 256).
        image_id_positives: treat captions of the same image as positives.
    """

    batch_negatives = True

    def __init__(
        self, weight: float = 1.0, embed_dim: int = 256, image_id_positives: bool = True
    ) -> None:
        super().__init__(weight)
        self.embed_dim = embed_dim
        self.image_id_positives = image_id_positives

    def bind(self, encoders: Encoders) -> None:
        self.image_proj = nn.Linear(encoders.vision.width, self.embed_dim)  # g_v
        self.text_proj = nn.Linear(encoders.text.width, self.embed_dim)  # g_w

    def embed_image(self, image: Encoding) -> Tensor:
        return F.normalize(self.image_proj(image.pooled).float(), dim=-1)

    def embed_text(self, text: Encoding) -> Tensor:
        return F.normalize(self.text_proj(text.pooled).float(), dim=-1)

    def score_weights(self, prefix: str) -> dict[str, str]:
        """Where the weights that turn cosine similarities into logits are, for an export's
        readers (``prefix``: this objective's name in the module)."""
        raise NotImplementedError


class Contrastive(ImageTextSpace):
    """Image–text contrastive alignment (CMA / ITC).

    Args:
        weight: weight of ``contrastive_loss`` in the total.
        embed_dim: width of the shared embedding space (ALBEF: 256).
        temperature: initial τ (0.07), learnt unless ``learn_temperature`` is off.
        temperature_range: τ is clamped into this range after every optimizer step, so every
            use sees it in range (ALBEF clamps before each use: the same values).
        image_id_positives: treat captions of the same image as positives.
    """

    name = "itc"

    def __init__(
        self,
        weight: float = 1.0,
        embed_dim: int = 256,
        temperature: float = 0.07,
        temperature_range: tuple[float, float] = (0.001, 0.5),
        learn_temperature: bool = True,
        image_id_positives: bool = True,
    ) -> None:
        super().__init__(weight, embed_dim, image_id_positives)
        low, high = temperature_range
        if not 0 < low <= temperature <= high:
            raise ValueError(
                f"itc temperature {temperature} must lie in temperature_range {temperature_range}"
                " (positive)"
            )
        self.temperature = nn.Parameter(torch.tensor(temperature), requires_grad=learn_temperature)
        self.temperature_range = temperature_range

    def score_weights(self, prefix: str) -> dict[str, str]:
        return {"temperature": f"{prefix}.temperature"}  # logits = cos / τ

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Clamp τ where the update left it: outside the step's graph, and with no
        device-to-host read of τ (a GPU sync) that a clamp before each use would need."""
        self.temperature.clamp_(*self.temperature_range)

    def forward(self, step: Step) -> dict[str, Tensor]:
        image, text = step.embedded(self)  # v_i, w_i
        tau = self.temperature
        all_text, offset = step.gather(text)
        all_image, _ = step.gather(image)
        if self.image_id_positives:
            targets = positive_targets(step.image_ids, step.gather_no_grad(step.image_ids))
        else:
            local = torch.arange(image.shape[0], device=image.device) + offset
            targets = F.one_hot(local, all_text.shape[0]).float()
        i2t = soft_cross_entropy(image @ all_text.T / tau, targets)
        t2i = soft_cross_entropy(text @ all_image.T / tau, targets)
        return {
            "contrastive_loss": (i2t + t2i) / 2,
            "i2t": i2t,
            "t2i": t2i,
            "temperature": tau.detach(),
        }
