import math

import torch

from vlp.flamingo.loss import IGNORE, flamingo_labels, lm_loss, predicting_positions

IMG, EOC, EOS, PAD = 9, 8, 7, 0
X = IGNORE
# The spec's worked example: t0 t1 <img> a b <EOC> <img> c d <EOC> <EOS> <PAD> <PAD>
EXAMPLE = torch.tensor([[1, 2, IMG, 3, 4, EOC, IMG, 5, 6, EOC, EOS, PAD, PAD]])
EXAMPLE_MASK = torch.tensor([[1] * 11 + [0] * 2])


def test_pairs_mask_only_padding_and_image_tags():
    labels = flamingo_labels(EXAMPLE, EXAMPLE_MASK, IMG, EOC, interleaved=False)
    assert labels.tolist() == [[1, 2, X, 3, 4, EOC, X, 5, 6, EOC, EOS, X, X]]


def test_interleaved_masks_text_before_first_image_and_after_each_chunk():
    labels = flamingo_labels(EXAMPLE, EXAMPLE_MASK, IMG, EOC, interleaved=True)
    # The final EOS follows an <EOC> with no image after it, so it is masked too.
    assert labels.tolist() == [[X, X, X, 3, 4, EOC, X, 5, 6, EOC, X, X, X]]


def test_interleaved_masks_the_text_between_a_chunk_end_and_the_next_image():
    ids = torch.tensor([[IMG, 3, EOC, 4, 5, IMG, 6, EOC, EOC, 1]])
    labels = flamingo_labels(ids, torch.ones_like(ids), IMG, EOC, interleaved=True)
    # A second <EOC> inside a span is masked with it (as OpenFlamingo's loop does).
    assert labels.tolist() == [[X, 3, EOC, X, X, X, 6, EOC, X, X]]


def test_padding_comes_from_the_attention_mask_not_the_pad_id():
    ids = torch.tensor([[IMG, 3, EOC, EOS, EOS]])  # pad token == EOS
    labels = flamingo_labels(ids, torch.tensor([[1, 1, 1, 1, 0]]), IMG, EOC, interleaved=False)
    assert labels.tolist() == [[X, 3, EOC, EOS, X]]


def test_loss_is_the_mean_nll_of_the_shifted_targets():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]])
    labels = torch.tensor([[X, 1, X]])  # only position 1 is a target, predicted from position 0
    expected = -(0.0 - math.log(math.exp(2) + 2))
    assert math.isclose(lm_loss(logits, labels).item(), expected, rel_tol=1e-6)
    labels = torch.tensor([[X, 1, 2]])  # position 2 is predicted from position 1 (not 2)
    expected = (expected + math.log(math.e + 2)) / 2
    assert math.isclose(lm_loss(logits, labels).item(), expected, rel_tol=1e-6)


def test_no_target_gives_zero_with_finite_gradients():
    logits = torch.randn(2, 4, 5, requires_grad=True)
    loss = lm_loss(logits, torch.full((2, 4), X))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_logits_at_the_predicting_positions_give_the_same_loss_and_gradient():
    torch.manual_seed(0)
    full = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.tensor([[X, 3, 4, X, X], [X, X, 1, 6, 2]])
    at = predicting_positions(labels)
    assert at.tolist() == [[1, 1, 0, 0, 0], [0, 1, 1, 1, 0]]
    rows = full.detach().clone()[at].requires_grad_()
    expected, kept = lm_loss(full, labels), lm_loss(rows, labels)
    assert torch.allclose(kept, expected)
    expected.backward()
    kept.backward()
    assert torch.allclose(rows.grad, full.grad[at])
    assert not full.grad[~at].any()
