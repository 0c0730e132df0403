"""ITC with momentum distillation and queues (ALBEF §3.3, eq. 3–5; TCL's CMA).

With momentum features v̂, ŵ and keys K_w = [ŵ of every rank ; text queue]
(K_v likewise):

    s_i2t = ⟨v_i, K_w⟩ / τ          ŝ_i2t = ⟨v̂_i, K_w⟩ / τ   (no gradient)
    q_i2t = α · softmax(ŝ_i2t) + (1 − α) · y_i2t
    L_itc = ½ [ H(q_i2t, softmax(s_i2t)) + H(q_t2i, softmax(s_t2i)) ]

y spreads mass evenly over keys with the same image id (queue entries
included), so captions of one image are never negatives, a fix of the
reference pretraining code (``shared/specs/tcl_albef.md`` §7). α ramps
linearly from 0 over ``alpha_warmup_steps`` optimizer steps. TCL's variant
feeds the momentum image branch the second augmented view
(``momentum_view="images_aug"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from vlp.encoders import Encoders
from vlp.objectives.contrastive import Contrastive, positive_targets, soft_cross_entropy
from vlp.queues import FeatureQueue
from vlp.step import Step
from vlp.teachers import DecaySchedule, EMATeacher, TeacherSpec, distillation_weight


@dataclass
class CrossModal:
    """One step's online features, keys and targets, shared by CMA and TCL's extra terms."""

    image: Tensor  # v, [B, D], with gradient
    text: Tensor  # w
    image_keys: Tensor  # K_v = [v̂ of all ranks ; image queue], no gradient
    text_keys: Tensor  # K_w
    key_ids: Tensor  # image id of every key
    batch_keys: int  # the first keys are this step's (all ranks); the rest come from the queues
    batch_offset: int  # where this rank's rows start among this step's keys
    targets: Tensor  # y over the keys, rows sum to 1
    momentum_image: Tensor  # v̂ of this rank
    momentum_text: Tensor  # ŵ
    temperature: Tensor  # τ


class MomentumContrastive(Contrastive):
    """ALBEF's ITC: queues of momentum features and momentum-distilled targets.

    Args:
        queue_size: features kept per modality (the paper: 65,536); any
            global batch size works.
        momentum: EMA decay m of the momentum encoders and projections (0.995).
        alpha: distillation weight α (0.4); 0 turns distillation off.
        alpha_warmup_steps: α ramps from 0 over this many optimizer steps.
        momentum_view: the batch field the momentum image encoder sees.
        momentum_dropout: keep dropout on in the momentum text encoder (TCL
            relies on it as the only text augmentation, SimCSE-style).
        **kwargs: the arguments of :class:`Contrastive` (weight, embed_dim, τ, ...).
    """

    name = "itc_md"
    batch_negatives = False  # most come from the queue, which every batch fills
    needs: ClassVar[frozenset[str]] = frozenset({"images", "text"})

    def __init__(
        self,
        queue_size: int = 65536,
        momentum: float = 0.995,
        alpha: float = 0.4,
        alpha_warmup_steps: int = 0,
        momentum_view: str = "images",
        momentum_dropout: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.queue_size = queue_size
        self.alpha = alpha
        self.alpha_warmup_steps = alpha_warmup_steps
        self.momentum_view = momentum_view
        schedule = DecaySchedule(momentum)
        self.vision_teacher = TeacherSpec("vision", schedule)
        self.text_teacher = TeacherSpec("text", schedule, dropout=momentum_dropout)
        self.needs = self.needs | {momentum_view}

    def bind(self, encoders: Encoders) -> None:
        super().bind(encoders)
        schedule = self.vision_teacher.schedule
        self.image_proj_m = EMATeacher(self.image_proj, schedule)
        self.text_proj_m = EMATeacher(self.text_proj, schedule)
        self.image_queue = FeatureQueue(self.embed_dim, self.queue_size)
        self.text_queue = FeatureQueue(self.embed_dim, self.queue_size)

    def teacher_specs(self) -> tuple[TeacherSpec, ...]:
        return (self.vision_teacher, self.text_teacher)

    def current_alpha(self, step: Step) -> float:
        return distillation_weight(self.alpha, step.global_step, self.alpha_warmup_steps)

    @torch.no_grad()
    def momentum_features(self, step: Step) -> tuple[Tensor, Tensor]:
        """v̂ and ŵ: momentum encoders and projections, normalised."""
        image = step.teacher_image(self.vision_teacher, self.momentum_view).pooled
        text = step.teacher_text(self.text_teacher).pooled
        return (
            F.normalize(self.image_proj_m(image).float(), dim=-1),
            F.normalize(self.text_proj_m(text).float(), dim=-1),
        )

    def cross_modal(self, step: Step) -> CrossModal:
        """Keys from every rank plus the queues; the queues are read before this step enqueues."""
        image, text = step.embedded(self)
        momentum_image, momentum_text = self.momentum_features(step)
        ids = step.image_ids
        all_ids = step.gather_no_grad(ids)
        queued_images, queue_ids = self.image_queue.contents()
        queued_texts, _ = self.text_queue.contents()
        key_ids = torch.cat([all_ids, queue_ids])
        offset = step.rank_offset()
        if self.image_id_positives:
            targets = positive_targets(ids, key_ids)
        else:
            rows = torch.arange(ids.shape[0], device=ids.device) + offset
            targets = F.one_hot(rows, key_ids.shape[0]).float()
        return CrossModal(
            image=image,
            text=text,
            image_keys=torch.cat([step.gather_no_grad(momentum_image), queued_images]),
            text_keys=torch.cat([step.gather_no_grad(momentum_text), queued_texts]),
            key_ids=key_ids,
            batch_keys=all_ids.shape[0],
            batch_offset=offset,
            targets=targets,
            momentum_image=momentum_image,
            momentum_text=momentum_text,
            temperature=self.temperature,
        )

    def distilled_terms(self, step: Step, cm: CrossModal) -> dict[str, Tensor]:
        alpha = self.current_alpha(step)
        tau = cm.temperature
        with torch.no_grad():
            q_i2t = alpha * F.softmax(cm.momentum_image @ cm.text_keys.T / tau, -1)
            q_t2i = alpha * F.softmax(cm.momentum_text @ cm.image_keys.T / tau, -1)
            q_i2t += (1 - alpha) * cm.targets
            q_t2i += (1 - alpha) * cm.targets
        i2t = soft_cross_entropy(cm.image @ cm.text_keys.T / tau, q_i2t)
        t2i = soft_cross_entropy(cm.text @ cm.image_keys.T / tau, q_t2i)
        return {"i2t": i2t, "t2i": t2i, "alpha": torch.tensor(alpha), "temperature": tau.detach()}

    @torch.no_grad()
    def enqueue(self, cm: CrossModal) -> None:
        """After the loss terms are formed: this step's keys from every rank, identical everywhere."""
        n = cm.batch_keys
        self.image_queue.enqueue(cm.image_keys[:n], cm.key_ids[:n])
        self.text_queue.enqueue(cm.text_keys[:n], cm.key_ids[:n])

    def forward(self, step: Step) -> dict[str, Tensor]:
        cm = self.cross_modal(step)
        terms = self.distilled_terms(step, cm)
        self.enqueue(cm)
        return {"contrastive_loss": (terms["i2t"] + terms["t2i"]) / 2, **terms}
