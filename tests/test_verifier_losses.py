"""Both verifier losses against values computed by hand.

BT, chosen r+ = (1, 0), rejected r- = (0, 2):
    -log sigmoid(1)  = log(1 + e^-1) = 0.3132616875
    -log sigmoid(-2) = log(1 + e^2)  = 2.1269280110
    mean = 1.2200948493; mean(r^2) over (1, 0, 0, 2) = 5 / 4; loss = 1.2200948493 + 1e-3 * 1.25
BCE, logits (0, 2, -1), labels (1, 0, 0):
    log 2 = 0.6931471806, log(1 + e^2) = 2.1269280110, log(1 + e^-1) = 0.3132616875; mean = 1.0444456264
"""

from __future__ import annotations

import pytest


torch = pytest.importorskip("torch")

from mucode.verifier.losses import bce_loss, bradley_terry_loss  # noqa: E402


def test_bradley_terry_loss_by_hand():
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(1.2200948493 + 1e-3 * 1.25, abs=1e-7)
    assert bradley_terry_loss(chosen, rejected, l2=0.0).item() == pytest.approx(1.2200948493, abs=1e-7)


def test_bradley_terry_l2_term_is_the_mean_square_of_every_reward():
    chosen, rejected = torch.tensor([3.0]), torch.tensor([3.0])  # equal: the BT part is log 2
    assert bradley_terry_loss(chosen, rejected, l2=0.1).item() == pytest.approx(0.6931471806 + 0.1 * 9.0, abs=1e-6)
    # not TRL's centering term mean((r+ + r-)^2), which would give 0.1 * 36
    with pytest.raises(ValueError, match="differ in shape"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))


def test_bradley_terry_gradient_pushes_the_pair_apart():
    chosen, rejected = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    assert chosen.grad.item() == pytest.approx(-0.5) and rejected.grad.item() == pytest.approx(0.5)  # -/+ sigmoid(0)


def test_bce_loss_by_hand():
    logits, labels = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1, 0, 0])
    assert bce_loss(logits, labels).item() == pytest.approx((0.6931471806 + 2.1269280110 + 0.3132616875) / 3, abs=1e-7)


def test_losses_match_torch_reference_functions_on_extreme_values():
    from torch.nn import functional as F

    chosen, rejected = torch.tensor([50.0, -50.0, 0.3, 1e-4]), torch.tensor([-50.0, 50.0, 0.1, 0.0])
    reference = -F.logsigmoid(chosen - rejected).mean()
    assert bradley_terry_loss(chosen, rejected, l2=0.0).item() == pytest.approx(reference.item(), rel=1e-6)
    logits, labels = torch.tensor([80.0, -80.0, 80.0, 0.5]), torch.tensor([0, 1, 1, 1])
    assert bce_loss(logits, labels).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, labels.float()).item(), rel=1e-6
    )
