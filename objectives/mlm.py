"""MLM: image-conditioned masked language modelling with momentum distillation.

ALBEF (Li et al. 2021) eq. (4) and §3.3, used unchanged by TCL (Yang et al.
2022, §3.5); ``shared/specs/tcl_albef.md`` §5:

    L_mlm = (1 − α)·H(y^msk, p^msk(I, T̂)) + α·H(q^msk(I, T̂), p^msk(I, T̂))

T̂ is the caption with 15% of its tokens masked 80/10/10 (``vlp.masking``).
p^msk is the student's distribution over the vocabulary at a masked
position: the online text encoder on T̂, then the fusion encoder attending to
the online image tokens, then the MLM head. q^msk = softmax over the
vocabulary of the teacher's logits: the EMA text encoder, fusion encoder and
head on the same T̂, attending to the EMA vision encoder's tokens of
``teacher_view`` (TCL: the second augmented view). Both cross-entropies are
means over the masked tokens of the local batch, in fp32.

The reference code took the student's log-softmax of the distillation term
over the sequence axis (ALBEF issue #58, TCL issue #12); both terms here are
over the vocabulary axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp.distributed import global_mean
from vlp.encoders import Encoders
from vlp.encoders.text import TextEncoder
from vlp.masking import IGNORE_INDEX, MaskedTokens, mask_tokens
from vlp.objectives.base import Objective
from vlp.step import Step
from vlp.teachers import DecaySchedule, EMATeacher, TeacherSpec, distillation_weight


def masked_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """CE_hard: mean over positions with a label of −log p(label); 0 when there are none.

    Means are over the global batch's masked positions (``global_mean``), so
    DDP matches one process on the whole batch however the masks fall.

    ``logits`` are [..., V], ``labels`` [...] with IGNORE_INDEX off the mask.
    The empty case keeps a gradient path, so DDP sees every head parameter used.
    """
    selected = labels != IGNORE_INDEX
    total = F.cross_entropy(logits[selected].float(), labels[selected], reduction="sum")
    return global_mean(total, selected.sum())


def distillation_cross_entropy(logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
    """CE_soft: mean over masked positions of −Σ_vocab softmax(teacher) · log_softmax(student)."""
    selected = labels != IGNORE_INDEX
    soft_labels = F.softmax(teacher_logits[selected].float(), dim=-1)  # q^msk, vocabulary axis
    log_p = F.log_softmax(logits[selected].float(), dim=-1)  # vocabulary axis, not dim=1
    return global_mean(-(soft_labels * log_p).sum(), selected.sum())


def masked_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Top-1 accuracy over masked positions; 0 when there are none."""
    selected = labels != IGNORE_INDEX
    correct = (logits[selected].argmax(-1) == labels[selected]).sum()
    return correct.float() / selected.sum().clamp_min(1)


class MLMHead(nn.Module):
    """BERT's prediction head: dense, GELU, LayerNorm, then a decoder to the vocabulary.

    The decoder weight is not a parameter here: it is passed in, so the
    student uses the online word embeddings and the teacher the EMA ones.
    That ties them as BERT does, and the teacher's tied weight is exactly the
    EMA of the student's (as in ALBEF's momentum ``BertForMaskedLM``) without
    storing a second copy of the vocabulary matrix.
    """

    def __init__(self, width: int, embed_dim: int, vocab_size: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(width, embed_dim)
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: Tensor, word_embeddings: Tensor) -> Tensor:
        x = self.norm(F.gelu(self.dense(hidden)))
        # The decoder runs in fp32 even under autocast: the losses soft-max over the
        # whole vocabulary, where bf16 logits lose the small differences.
        with torch.autocast(hidden.device.type, enabled=False):
            return F.linear(x.float(), word_embeddings.float(), self.bias.float())


def word_embeddings(text: TextEncoder) -> Tensor:
    """[V, E] input embedding matrix of a text encoder (the tied decoder weight)."""
    return text.model.get_input_embeddings().weight


class MaskedLanguageModeling(Objective):
    """Masked language modelling through the fusion encoder, optionally distilled.

    Args:
        weight: weight of ``mlm_loss`` in the total.
        mask_ratio: share of maskable tokens selected (BERT/ALBEF: 0.15).
        distill: add the momentum-distillation term with soft labels.
        alpha: α, the distillation term's weight (ALBEF/TCL: 0.4).
        alpha_warmup_steps: α ramps linearly from 0 over this many optimizer
            steps (ALBEF/TCL: one epoch); 0 disables the ramp.
        momentum: decay of the EMA teachers (ALBEF/TCL: 0.995).
        teacher_view: batch field of the images the teacher sees; TCL uses
            the second augmented view (``images_aug``).
    """

    name = "mlm"

    def __init__(
        self,
        weight: float = 1.0,
        mask_ratio: float = 0.15,
        distill: bool = False,
        alpha: float = 0.4,
        alpha_warmup_steps: int = 0,
        momentum: float = 0.995,
        teacher_view: str = "images",
    ) -> None:
        super().__init__(weight)
        self.mask_ratio = mask_ratio
        self.distill = distill
        self.alpha = alpha  # α
        self.alpha_warmup_steps = alpha_warmup_steps
        self.teacher_view = teacher_view
        self.needs = frozenset(
            {"images", "text", "fusion"} | ({teacher_view} if distill else set())
        )
        schedule = DecaySchedule(momentum)
        self.teacher_schedule = schedule
        self.vision_teacher = TeacherSpec("vision", schedule)
        self.text_teacher = TeacherSpec("text", schedule)
        self.fusion_teacher = TeacherSpec("fusion", schedule)

    def bind(self, encoders: Encoders) -> None:
        if encoders.fusion is None:
            raise ValueError("mlm needs the fusion encoder: set model.fusion in the config")
        tokenizer = encoders.text.tokenize.tokenizer
        if tokenizer.mask_token_id is None:
            raise ValueError(f"mlm needs a tokenizer with a mask token; {tokenizer.name_or_path!r}")
        embed_vocab, embed_dim = word_embeddings(encoders.text).shape
        self.mask_id: int = tokenizer.mask_token_id
        self.special_ids: tuple[int, ...] = tuple(tokenizer.all_special_ids)
        self.vocab_size = min(len(tokenizer), embed_vocab)  # ids that tokenizer and model share
        eps = getattr(encoders.text.model.config, "layer_norm_eps", 1e-12)
        self.head = MLMHead(encoders.fusion.width, embed_dim, embed_vocab, eps)
        if self.distill:
            self.head_teacher = EMATeacher(self.head, self.teacher_schedule)

    def teacher_specs(self) -> tuple[TeacherSpec, ...]:
        if not self.distill:
            return ()
        return (self.vision_teacher, self.text_teacher, self.fusion_teacher)

    def mask(self, step: Step) -> MaskedTokens:
        """This step's masked captions, from a CPU generator seeded by the global RNG, which
        the module seeds per step and rank (``vlp.seeding.seed_step``)."""
        seed = int(torch.randint(2**62, ()))
        return mask_tokens(
            step.field("text_ids"),
            step.field("text_mask"),
            self.special_ids,
            self.mask_id,
            self.vocab_size,
            self.mask_ratio,
            torch.Generator().manual_seed(seed),
        )

    def forward(self, step: Step) -> dict[str, Tensor]:
        return self.terms(step, self.mask(step))

    def terms(self, step: Step, masked: MaskedTokens) -> dict[str, Tensor]:
        """The loss terms for given masked captions (``forward`` draws them)."""
        text_mask = step.field("text_mask")
        selected = masked.selected
        labels = masked.labels[selected]
        student = step.fuse(step.encoders.text(masked.ids, text_mask), step.image())
        # Only the masked rows reach the [M, V] decoder: most positions are never predicted.
        logits = self.head(student.tokens[selected], word_embeddings(step.encoders.text))
        hard = masked_cross_entropy(logits, labels)
        accuracy = masked_accuracy(logits.detach(), labels)
        if not self.distill:
            return {"mlm_loss": hard, "accuracy": accuracy}
        teacher_logits = self.teacher_logits(step, masked.ids, text_mask, selected)
        soft = distillation_cross_entropy(logits, teacher_logits, labels)
        alpha = distillation_weight(self.alpha, step.global_step, self.alpha_warmup_steps)
        return {
            "mlm_loss": (1 - alpha) * hard + alpha * soft,
            "accuracy": accuracy,
            "ce_hard": hard.detach(),
            "ce_soft": soft.detach(),
            "alpha": logits.new_tensor(alpha),
        }

    @torch.no_grad()
    def teacher_logits(
        self, step: Step, masked_ids: Tensor, text_mask: Tensor, selected: Tensor
    ) -> Tensor:
        """[M, V] logits of the EMA text encoder, fusion encoder and head at the masked rows."""
        image = step.teacher_image(self.vision_teacher, self.teacher_view)
        text_teacher = step.teacher(self.text_teacher)
        fused = step.teacher(self.fusion_teacher)(text_teacher(masked_ids, text_mask), image)
        tied = word_embeddings(text_teacher.module)
        return self.head_teacher(fused.tokens[selected], tied)
