"""MLM against hand computations: the loss terms, the soft-label axis, the teacher's inputs."""

from __future__ import annotations

import math

import pytest
import torch

from tests.tiny import quiet_trainer, tiny_data
from vlp.encoders import Encoders, FusionConfig
from vlp.masking import IGNORE_INDEX, MaskedTokens
from vlp.objectives.mlm import (
    MaskedLanguageModeling,
    distillation_cross_entropy,
    masked_accuracy,
    masked_cross_entropy,
)
from vlp.step import Step
from vlp.teachers import DecaySchedule, EMATeacher, TeacherSpec, distillation_weight

CAPTIONS = ["a red cube left of a blue ball", "two green spheres", ""]


def log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    log_z = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - log_z for x in row]


# Positions 0 and 2 of one caption are masked; vocabulary of 4.
STUDENT = [[[2.0, 0.5, -1.0, 0.0], [0.3, 0.1, 0.2, 0.9], [-0.5, 1.5, 0.0, 0.7]]]
TEACHER = [[[1.0, 2.0, 0.0, -1.0], [0.0, 0.0, 3.0, 0.0], [0.2, 0.2, 2.5, -0.3]]]
LABELS = [[0, IGNORE_INDEX, 3]]


def test_hard_term_is_the_mean_negative_log_likelihood_of_masked_tokens() -> None:
    expected = -(log_softmax(STUDENT[0][0])[0] + log_softmax(STUDENT[0][2])[3]) / 2
    loss = masked_cross_entropy(torch.tensor(STUDENT), torch.tensor(LABELS))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    accuracy = masked_accuracy(torch.tensor(STUDENT), torch.tensor(LABELS))
    assert accuracy.item() == pytest.approx(0.5)  # position 0 right (argmax 0), 2 wrong (argmax 1)


def test_soft_labels_are_a_softmax_over_the_vocabulary_not_the_sequence() -> None:
    def soft_term(student_axis: str) -> float:
        total, count = 0.0, 0
        for position in (0, 2):
            q = [math.exp(x) for x in log_softmax(TEACHER[0][position])]
            if student_axis == "vocabulary":
                log_p = log_softmax(STUDENT[0][position])
            else:  # the reference's bug: log-softmax over the positions of each vocabulary entry
                columns = [log_softmax([STUDENT[0][t][v] for t in range(3)]) for v in range(4)]
                log_p = [columns[v][position] for v in range(4)]
            total -= sum(qv * lv for qv, lv in zip(q, log_p, strict=True))
            count += 1
        return total / count

    loss = distillation_cross_entropy(
        torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS)
    ).item()
    assert loss == pytest.approx(soft_term("vocabulary"), rel=1e-6)
    assert abs(loss - soft_term("sequence")) > 0.1


def test_no_masked_token_gives_zero_loss_not_nan_and_keeps_a_gradient_path() -> None:
    logits = torch.randn(2, 3, 5, requires_grad=True)
    labels = torch.full((2, 3), IGNORE_INDEX)
    hard = masked_cross_entropy(logits, labels)
    soft = distillation_cross_entropy(logits, torch.randn(2, 3, 5), labels)
    assert hard.item() == 0.0 and soft.item() == 0.0
    (hard + soft).backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    assert masked_accuracy(logits, labels).item() == 0.0


def test_alpha_ramps_linearly_then_stays() -> None:
    assert distillation_weight(0.4, 0, 100) == 0.0
    assert distillation_weight(0.4, 25, 100) == pytest.approx(0.1)
    assert distillation_weight(0.4, 1000, 100) == pytest.approx(0.4)
    assert distillation_weight(0.4, 0, 0) == pytest.approx(0.4)


@pytest.fixture
def setup(tiny_vision, tiny_text):
    """Tiny encoders, a distilling MLM whose teacher sees ``images_aug``, teachers ≠ students."""
    encoders = Encoders(tiny_vision, tiny_text, FusionConfig(depth=1, heads=2))
    mlm = MaskedLanguageModeling(
        distill=True, alpha=0.4, alpha_warmup_steps=10, teacher_view="images_aug"
    )
    mlm.bind(encoders)
    teachers = {
        spec.key: EMATeacher.from_spec(getattr(encoders, spec.source), spec)
        for spec in mlm.teacher_specs()
    }
    with torch.no_grad():
        # Sharp heads: near-uniform predictions over 30,522 words would hide which
        # inputs the teacher saw inside a relative tolerance.
        mlm.head.norm.weight.mul_(20.0)
        mlm.head_teacher.module.norm.weight.mul_(20.0)
        for param in [*encoders.parameters(), *mlm.head.parameters()]:  # online ≠ EMA copies
            param.add_(0.05 * torch.randn_like(param))
    tokens = tiny_text.tokenize(CAPTIONS)
    batch = {
        "images": torch.randn(3, 3, 32, 32),
        "images_aug": torch.randn(3, 3, 32, 32),
        **tokens,
    }
    return encoders, mlm, teachers, batch


def hand_masked(batch) -> MaskedTokens:
    """Mask word 2 of caption 0 and word 1 of caption 1, replace word 4 of caption 0 at random."""
    ids, labels = batch["text_ids"].clone(), torch.full_like(batch["text_ids"], IGNORE_INDEX)
    for row, col, new in ((0, 2, 103), (1, 1, 103), (0, 4, 2000)):
        labels[row, col] = ids[row, col]
        ids[row, col] = new
    return MaskedTokens(ids, labels)


def test_loss_matches_a_hand_computation_with_the_ema_teacher_on_the_second_view(setup) -> None:
    encoders, mlm, teachers, batch = setup
    masked = hand_masked(batch)
    terms = mlm.terms(Step(batch, encoders, teachers, global_step=5), masked)

    teacher = {spec.source: teachers[spec.key] for spec in mlm.teacher_specs()}
    with torch.no_grad():
        fused = encoders.fusion(
            encoders.text(masked.ids, batch["text_mask"]), encoders.vision(batch["images"])
        )
        student = mlm.head(fused.tokens, encoders.text.model.get_input_embeddings().weight)
        text = teacher["text"](masked.ids, batch["text_mask"])
        fused_t = teacher["fusion"](text, teacher["vision"](batch["images_aug"]))
        embeddings_t = teacher["text"].module.model.get_input_embeddings().weight
        teacher_logits = mlm.head_teacher(fused_t.tokens, embeddings_t)
    hard = soft = 0.0
    positions = masked.selected.nonzero().tolist()
    for row, col in positions:  # explicit formulas in float64 over the 30,522-word vocabulary
        s, t = student[row, col].double(), teacher_logits[row, col].double()
        log_p = s - s.max() - (s - s.max()).exp().sum().log()
        q = (t - t.max()).exp() / (t - t.max()).exp().sum()
        hard -= log_p[int(masked.labels[row, col])].item()
        soft -= (q * log_p).sum().item()
    hard, soft = hard / len(positions), soft / len(positions)
    alpha = 0.4 * 5 / 10  # α ramped halfway
    assert terms["alpha"].item() == pytest.approx(alpha)
    assert terms["ce_hard"].item() == pytest.approx(hard, rel=1e-4)
    assert terms["ce_soft"].item() == pytest.approx(soft, rel=1e-4)
    assert terms["mlm_loss"].item() == pytest.approx((1 - alpha) * hard + alpha * soft, rel=1e-4)
    assert abs(hard - soft) > 1e-3  # the teacher really is a different model


def test_gradient_reaches_student_encoders_and_head_never_the_teacher(setup) -> None:
    encoders, mlm, teachers, batch = setup
    terms = mlm.terms(Step(batch, encoders, teachers, global_step=100), hand_masked(batch))
    terms["mlm_loss"].backward()
    reached = {
        "fusion cross-attention": encoders.fusion.layers[0].cross_attn.in_proj_weight,
        "text encoder layer": encoders.text.model.encoder.layer[0].attention.self.query.weight,
        "tied word embeddings": encoders.text.model.get_input_embeddings().weight,
        "vision encoder": next(encoders.vision.parameters()),
        "head": mlm.head.dense.weight,
    }
    for name, param in reached.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    for teacher in [*teachers.values(), mlm.head_teacher]:
        assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


def test_caption_without_maskable_tokens_gives_zero_loss(setup) -> None:
    encoders, mlm, teachers, batch = setup
    only_specials = {k: v[2:] for k, v in batch.items()}  # "" → [CLS] [SEP] [PAD]...
    terms = mlm(Step(only_specials, encoders, teachers, global_step=100))
    assert terms["mlm_loss"].item() == 0.0 and terms["mlm_loss"].requires_grad
    terms["mlm_loss"].backward()
    assert mlm.head.dense.weight.grad is not None


def test_masks_are_reproducible_for_a_seed_and_use_the_tokenizer(setup) -> None:
    encoders, mlm, teachers, batch = setup
    step = Step(batch, encoders, teachers)
    torch.manual_seed(3)
    first = mlm.mask(step)
    torch.manual_seed(3)
    again = mlm.mask(step)
    assert torch.equal(first.ids, again.ids) and torch.equal(first.labels, again.labels)
    tokenizer = encoders.text.tokenizer
    assert mlm.mask_id == tokenizer.mask_token_id
    specials = torch.tensor(tokenizer.all_special_ids)
    assert not torch.isin(batch["text_ids"][first.selected], specials).any()
    torch.manual_seed(3)
    forward = mlm(step)
    expected = mlm.terms(Step(batch, encoders, teachers), first)
    assert forward["mlm_loss"].item() == pytest.approx(expected["mlm_loss"].item())


def test_needs_and_teachers_follow_the_configuration(tiny_vision, tiny_text) -> None:
    plain = MaskedLanguageModeling()
    assert plain.needs == {"images", "text", "fusion"} and plain.teacher_specs() == ()
    tcl = MaskedLanguageModeling(distill=True, teacher_view="images_aug")
    assert tcl.needs == {"images", "text", "fusion", "images_aug"}
    shared = {TeacherSpec(s, DecaySchedule(0.995)).key for s in ("vision", "text", "fusion")}
    assert {spec.key for spec in tcl.teacher_specs()} == shared
    with pytest.raises(ValueError, match="fusion"):
        plain.bind(Encoders(tiny_vision, tiny_text))


def test_trains_in_the_module_and_its_head_teacher_follows_each_optimizer_step(
    tiny_vision, tiny_text
) -> None:

    from vlp.datamodules.synthetic import SyntheticScenes
    from vlp.module import VLPModule

    mlm = MaskedLanguageModeling(distill=True, mask_ratio=0.5)
    model = VLPModule(tiny_vision, tiny_text, [mlm], fusion=FusionConfig(depth=1, heads=2))
    assert {spec.key for spec in mlm.teacher_specs()} == set(model.teachers)
    start = mlm.head_teacher.module.dense.weight.clone()
    data = tiny_data(SyntheticScenes("train", 8, image_size=32), model.tokenize)
    trainer = quiet_trainer(
        max_steps=2,
    )
    trainer.fit(model, data)
    assert int(mlm.head_teacher.updates) == 2
    assert not torch.equal(mlm.head_teacher.module.dense.weight, start)
    assert torch.isfinite(trainer.callback_metrics["train/mlm/mlm_loss"])


def test_head_gives_fp32_logits_under_bf16_autocast() -> None:
    from vlp.objectives.mlm import MLMHead

    head, hidden, embeddings = MLMHead(8, 6, 50), torch.randn(5, 8), torch.randn(50, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(hidden, embeddings)
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, head(hidden, embeddings), atol=0.1)
