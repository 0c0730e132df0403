"""data2vec: regress an EMA teacher's averaged layer outputs at masked positions.

Baevski et al. 2022, §3 (``shared/specs/data2vec_ptuning.md`` part A). The
teacher encodes the *unmasked* input; with a_t^l the output of its layer l at
position t and â a parameter-free normalisation (per-token layer norm, or
instance norm over the positions of one sample):

    y_t = norm( (1/K) Σ_{l=L−K+1..L} â_t^l )          (§3.3; final norm optional)
    L   = mean over masked t of ℓ_β( f(h_t), y_t )      (§3.4)

h is the student's final output on the masked input (masked patches or tokens
replaced by a learned mask embedding), f a regression head, ℓ_β Smooth-L1
with β (squared error when β = 0) over the masked positions of the global batch, reduced
as the released recipes do: the mean over every element for images (vision v1), the sum
over dimensions averaged over masked tokens for text (text v1, ``loss_scale: 1``). The teacher is an EMA of the student,
Δ ← τΔ + (1 − τ)θ, with τ ramped linearly τ0 → τe over τn updates then
constant (``vlp.teachers``); fp32, eval mode, no gradient.

Choices where the paper and the released code differ: a^l is the FFN output
before the residual add (paper, text code) or the block output (released
vision recipe, the image default here); the teacher always sees the full
caption (fairseq#4881 fed it only the masked tokens); with BERT's 80/10/10
masking every selected token is predicted, not only those shown as [MASK]
(fairseq#4229).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp.distributed import global_mean
from vlp.encoders import Encoders
from vlp.encoding import Encoding
from vlp.masking import BlockMasking, SpanMasking
from vlp.objectives.base import Objective
from vlp.step import Step
from vlp.teachers import DecaySchedule, EMATeacher, TeacherSpec

LayerOutput = Literal["ffn", "block"]
LayerNorm = Literal["layer", "instance", "none"]

#: parameters the teacher copies instead of averaging with share_embeddings (paper §3.2)
VISION_EMBEDDINGS = ("model.patch_embed.", "model.pos_embed")
TEXT_EMBEDDINGS = ("model.embeddings.",)


@dataclass(frozen=True)
class Targets:
    """How the teacher's layers become the regression targets y (§3.3)."""

    top_k: int = 10  # K
    layer_output: LayerOutput = "ffn"  # FFN output before the residual add, or block output
    layer_norm: LayerNorm = "layer"  # per layer: per-token LN, instance norm over positions
    final_norm: bool = False  # layer norm of the average


@dataclass(frozen=True)
class ImageBranch:
    """Patches: BEiT block masking, and the released ViT-B recipe's targets, head and loss."""

    mask_ratio: float = 0.6
    min_block: int = 16  # patches
    min_aspect: float = 0.3
    targets: Targets = Targets(top_k=6, layer_output="block", final_norm=True)
    beta: float = 2.0  # β of Smooth-L1; 0 for squared error
    head_layers: int = 1  # Linear(D, D)
    weight: float = 1.0
    per_token_sum: ClassVar[bool] = False  # ℓ averaged over elements, not summed per patch


@dataclass(frozen=True)
class TextBranch:
    """Caption tokens: the released text config (spans of 4 at 0.35, K = 10, β = 4, 2-layer head)."""

    mask_ratio: float = 0.35
    span: int = 4
    mask_fraction: float = 1.0  # the rest of the selected tokens: random, then unchanged
    random_fraction: float = 0.0
    targets: Targets = Targets()
    beta: float = 4.0
    head_layers: int = 2  # Linear(D, 2D), GELU, Linear(2D, D)
    weight: float = 1.0
    per_token_sum: ClassVar[bool] = True  # ℓ summed over a token's dimensions


IMAGE, TEXT = ImageBranch(), TextBranch()
VISION_EMA = DecaySchedule(0.9998)  # the released vision recipe: constant τ


def normalise(x: Tensor, how: LayerNorm, valid: Tensor | None = None) -> Tensor:
    """Parameter-free normalisation of [B, N, D] layer outputs, in fp32.

    ``instance``: each channel over the (``valid``) positions of its sample.
    """
    x = x.float()
    if how == "layer":
        return F.layer_norm(x, x.shape[-1:])
    if how == "instance":
        weights = torch.ones_like(x[..., :1]) if valid is None else valid[..., None].float()
        count = weights.sum(1, keepdim=True).clamp_min(1)
        mean = (x * weights).sum(1, keepdim=True) / count
        var = ((x - mean) ** 2 * weights).sum(1, keepdim=True) / count
        return (x - mean) / torch.sqrt(var + 1e-5)
    return x


def regression_targets(
    layers: Sequence[Tensor], targets: Targets, valid: Tensor | None = None
) -> Tensor:
    """y: the normalised top-K layers averaged, optionally layer-normed again."""
    if not 1 <= targets.top_k <= len(layers):
        raise ValueError(f"top_k={targets.top_k} but the teacher has {len(layers)} layers")
    top = [normalise(a, targets.layer_norm, valid) for a in layers[-targets.top_k :]]
    y = torch.stack(top).mean(0)
    return F.layer_norm(y, y.shape[-1:]) if targets.final_norm else y


def regression_loss(prediction: Tensor, target: Tensor, beta: float) -> Tensor:
    """Σ over elements of ℓ_β: Smooth-L1 with β, or squared error when β = 0."""
    prediction = prediction.float()
    if beta == 0:
        return F.mse_loss(prediction, target, reduction="sum")
    return F.smooth_l1_loss(prediction, target, reduction="sum", beta=beta)


def regression_head(width: int, layers: int) -> nn.Module:
    if layers == 1:
        return nn.Linear(width, width)
    if layers == 2:
        return nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
    raise ValueError(f"head_layers must be 1 or 2, got {layers}")


def teacher_layers(
    teacher: EMATeacher, output: LayerOutput, *inputs: object
) -> tuple[Encoding, list[Tensor]]:
    """The teacher's encoding of ``inputs`` and every layer's a^l (FFN modules hooked for ``ffn``)."""
    if output == "block":
        encoding = teacher(*inputs)
        return encoding, list(encoding.hidden_states)
    recorded: list[Tensor] = []
    hooks = [
        module.register_forward_hook(lambda _module, _inputs, out: recorded.append(out))
        for module in teacher.module.ffn_modules()
    ]
    try:
        encoding = teacher(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return encoding, recorded


def _std(x: Tensor) -> Tensor:
    """Mean over channels of the std over positions: near 0 means collapse (spec §A.8.10)."""
    return x.detach().float().std(0).mean() if x.shape[0] > 1 else x.new_zeros(())


class Data2Vec(Objective):
    """data2vec on image patches, caption tokens, or both through the fusion encoder.

    Args:
        weight: weight of this objective's losses in the total.
        modality: ``image`` (vision tower), ``text`` (text tower) or
            ``multimodal``: patches as for ``image``, and caption tokens
            through the text and fusion encoders, the masked caption attending
            to the masked image; caption targets average the top K of the
            teacher's text layers followed by its fusion layers on the full
            caption and image (MAMO-style, spec §A.10), each modality
            normalised on its own.
        image: masking, targets, head and loss of the patches.
        text: the same for caption tokens.
        ema: τ per update: ``{start: τ0, end: τe, steps: τn}``; the default is
            the released vision recipe's constant 0.9998 (text: 0.999 →
            0.9999 over 100k updates).
        share_embeddings: the teacher copies the student's patch/token and
            position embeddings instead of averaging them (paper §3.2); the
            released vision recipe averages everything.
    """

    name = "data2vec"

    def __init__(
        self,
        weight: float = 1.0,
        modality: Literal["image", "text", "multimodal"] = "image",
        image: ImageBranch = IMAGE,
        text: TextBranch = TEXT,
        ema: DecaySchedule = VISION_EMA,
        share_embeddings: bool = False,
    ) -> None:
        super().__init__(weight)
        self.modality = modality
        self.image = image
        self.text = text
        self.uses_image = modality in ("image", "multimodal")
        self.uses_text = modality in ("text", "multimodal")
        self.vision_teacher = TeacherSpec(
            "vision", ema, shared=VISION_EMBEDDINGS if share_embeddings else ()
        )
        self.text_teacher = TeacherSpec(
            "text", ema, shared=TEXT_EMBEDDINGS if share_embeddings else ()
        )
        self.fusion_teacher = TeacherSpec("fusion", ema)
        self.needs = frozenset(
            {"images"} | ({"text"} if self.uses_text else set())
            | ({"fusion"} if modality == "multimodal" else set())
        )  # fmt: skip

    def bind(self, encoders: Encoders) -> None:
        """Mask recipes and heads need the towers' patch grid, tokenizer and widths."""
        recipes: set = set()
        if self.uses_image:
            encoders.vision.add_mask_token()
            recipes.add(
                BlockMasking(
                    encoders.vision.patch_grid,
                    self.image.mask_ratio,
                    self.image.min_block,
                    min_aspect=self.image.min_aspect,
                )
            )
            self.image_head = regression_head(encoders.vision.width, self.image.head_layers)
        if self.uses_text:
            recipes.add(self._span_masking(encoders))
            # The fusion encoder keeps the text width, so one head size serves both paths.
            self.text_head = regression_head(encoders.text.width, self.text.head_layers)
        self.needs = self.needs | recipes

    def _span_masking(self, encoders: Encoders) -> SpanMasking:
        tokenizer = encoders.text.tokenizer
        if tokenizer.mask_token_id is None:
            raise ValueError(f"data2vec text needs a mask token; {tokenizer.name_or_path!r}")
        rows = encoders.text.model.get_input_embeddings().weight.shape[0]
        return SpanMasking(
            tuple(tokenizer.all_special_ids),
            tokenizer.mask_token_id,
            min(len(tokenizer), rows),  # ids that tokenizer and model share
            self.text.mask_ratio,
            self.text.span,
            self.text.mask_fraction,
            self.text.random_fraction,
        )

    def teacher_specs(self) -> tuple[TeacherSpec, ...]:
        specs = {
            "image": (self.vision_teacher,),
            "text": (self.text_teacher,),
            "multimodal": (self.vision_teacher, self.text_teacher, self.fusion_teacher),
        }
        return specs[self.modality]

    def forward(self, step: Step) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        if self.uses_image:
            student = step.masked_image().tokens
            targets = regression_targets(
                self.image_layers(step, student.shape[1]), self.image.targets
            )
            terms.update(
                self.branch_terms(
                    "image", self.image_head, student, targets, step.field("image_mask"), self.image
                )
            )
        if self.uses_text:
            fused = self.modality == "multimodal"
            student = (step.masked_fused() if fused else step.masked_text()).tokens
            layers = self.fused_text_layers(step) if fused else self.text_layers(step)
            targets = regression_targets(layers, self.text.targets, step.field("text_mask").bool())
            positions = step.field("text_mask_positions")
            terms.update(
                self.branch_terms("text", self.text_head, student, targets, positions, self.text)
            )
        return terms

    def branch_terms(
        self,
        branch: str,
        head: nn.Module,
        student: Tensor,
        targets: Tensor,
        masked: Tensor,
        config: ImageBranch | TextBranch,
    ) -> dict[str, Tensor]:
        """One modality's loss at its masked positions, and the stds that reveal collapse."""
        prediction = head(student[masked])
        target = targets[masked]
        total = regression_loss(prediction, target, config.beta)
        loss = global_mean(total, target.shape[0] if config.per_token_sum else target.numel())
        return {
            f"{branch}_loss": config.weight * loss,
            f"{branch}_target_std": _std(target),
            f"{branch}_prediction_std": _std(prediction),
        }

    def _teacher_layers(
        self, step: Step, spec: TeacherSpec, output: LayerOutput, *fields: str
    ) -> tuple[Encoding, list[Tensor]]:
        """Memoised: objectives with the same teacher and layer output share one teacher pass."""
        return step.cached(
            ("data2vec_teacher", spec.key, output, fields),
            lambda: teacher_layers(
                step.teacher(spec), output, *(step.field(field) for field in fields)
            ),
        )

    def image_layers(self, step: Step, patches: int) -> list[Tensor]:
        """a^l of the vision teacher on the full images, at the patch positions."""
        output = self.image.targets.layer_output
        _, layers = self._teacher_layers(step, self.vision_teacher, output, "images")
        return [a[:, -patches:] for a in layers]  # timm puts prefix tokens first

    def text_layers(self, step: Step) -> list[Tensor]:
        """a^l of the text teacher on the full captions."""
        output = self.text.targets.layer_output
        return self._teacher_layers(step, self.text_teacher, output, "text_ids", "text_mask")[1]

    def fused_text_layers(self, step: Step) -> list[Tensor]:
        """a^l of the teacher's text layers, then of its fusion layers attending to the full image."""
        output = self.text.targets.layer_output
        text, text_layers = self._teacher_layers(
            step, self.text_teacher, output, "text_ids", "text_mask"
        )
        image_output = self.image.targets.layer_output  # shares the image branch's pass
        image, _ = self._teacher_layers(step, self.vision_teacher, image_output, "images")

        def fuse() -> list[Tensor]:
            return teacher_layers(step.teacher(self.fusion_teacher), output, text, image)[1]

        fusion_layers = step.cached(("data2vec_fused", self.fusion_teacher.key, output), fuse)
        return [*text_layers, *fusion_layers]
