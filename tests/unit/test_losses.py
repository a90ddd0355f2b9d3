"""The losses of ``--loss`` (issue 19, item 1) against plain reference implementations written
from the papers, on fixed inputs: values and gradients, classes without a positive in the
batch included; and the weighted sums ``--loss`` spells."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from hpatool.engine.parsing import parse_loss
from hpatool.engine.training.losses import create_loss, focal_loss, lovasz_hinge
from hpatool.errors import UsageError


def _jaccard_loss(gt: list[int], mispredicted: set[int]) -> float:
    """Berman et al. 2018, eq. (1)-(2): the Jaccard loss of a set M of mispredicted items,
    ``|M| / |{y = 1} U M|`` (0 for an empty union)."""
    positives = {i for i, y in enumerate(gt) if y}
    union = positives | mispredicted
    return len(mispredicted) / len(union) if union else 0.0


def _reference_lovasz_one_class(logits: torch.Tensor, gt: list[int]) -> torch.Tensor:
    """The Lovász extension of the Jaccard loss (Berman et al. 2018, eq. (8)-(9)) evaluated at
    the hinge errors ``m_i = max(0, 1 - F_i y_i)``: sort the errors in decreasing order and sum
    ``m_(i) * (Delta({pi_1..pi_i}) - Delta({pi_1..pi_(i-1)}))``, with Delta computed from the
    sets themselves (plain Python loops, no cumulative sums)."""
    signs = torch.tensor([1.0 if y else -1.0 for y in gt])
    errors = (1.0 - logits * signs).clamp(min=0)
    order = sorted(range(len(gt)), key=lambda i: -float(errors[i].detach()))
    total = torch.zeros(())
    prefix: set[int] = set()
    for i in order:
        before = _jaccard_loss(gt, prefix)
        prefix = prefix | {i}
        total = total + errors[i] * (_jaccard_loss(gt, prefix) - before)
    return total


def _reference_lovasz(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    per_class = [
        _reference_lovasz_one_class(logits[:, c], [int(v) for v in targets[:, c]])
        for c in range(logits.shape[1])
    ]
    return torch.stack(per_class).mean()


def _reference_focal(
    logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0
) -> torch.Tensor:
    """Lin et al. 2017: FL(p_t) = -(1 - p_t)^gamma log(p_t), p_t = p for y = 1 else 1 - p."""
    p = torch.sigmoid(logits)
    p_t = torch.where(targets > 0, p, 1 - p)
    return (-((1 - p_t) ** gamma) * torch.log(p_t)).mean()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    logits = torch.randn(7, 5, dtype=torch.float64) * 2
    targets = torch.zeros(7, 5, dtype=torch.float64)
    targets[[0, 3, 4], 0] = 1  # class 0: 3 positives
    targets[[1], 1] = 1  # class 1: one positive
    targets[:, 2] = 1  # class 2: all positive
    # class 3: no positive in the batch; class 4: one positive with a ties in the logits
    targets[5, 4] = 1
    logits[2, 4] = logits[5, 4]
    return logits, targets


@pytest.mark.parametrize("name", ["lovasz", "focal"])
def test_losses_equal_the_reference_in_value_and_gradient(name: str) -> None:
    logits, targets = _inputs()
    ours_fn, ref_fn = (
        (lovasz_hinge, _reference_lovasz) if name == "lovasz" else (focal_loss, _reference_focal)
    )
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ours, ref = ours_fn(a, targets), ref_fn(b, targets)
    assert float(ours) == pytest.approx(float(ref), rel=1e-6, abs=1e-7)
    ours.backward()
    ref.backward()
    assert a.grad is not None and b.grad is not None
    assert torch.allclose(a.grad.double(), b.grad.double(), atol=1e-6)


def test_lovasz_of_a_class_without_positives_counts_its_false_positives() -> None:
    logits = torch.tensor([[2.0], [-3.0], [0.5]])
    targets = torch.zeros(3, 1)
    # every negative with logit > -1 is a hinge error; the Jaccard loss of any non-empty set of
    # negatives is 1, so the extension is the largest error: 1 + 2 = 3
    assert float(lovasz_hinge(logits, targets)) == pytest.approx(3.0)
    assert float(_reference_lovasz(logits, targets)) == pytest.approx(3.0)
    # all scored safely below -1: no loss
    assert float(lovasz_hinge(torch.full((3, 1), -2.0), targets)) == 0.0


def test_lovasz_is_zero_for_a_perfect_margin_and_positive_otherwise() -> None:
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    perfect = torch.where(targets > 0, 3.0, -3.0)
    assert float(lovasz_hinge(perfect, targets)) == 0.0
    assert float(lovasz_hinge(-perfect, targets)) > 0


def test_weighted_sums_are_the_sums_of_their_terms() -> None:
    logits, targets = _inputs()
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    assert float(create_loss("bce")(logits, targets)) == pytest.approx(float(bce))
    combined = create_loss("bce*0.5+lovasz*1")(logits, targets)
    expected = 0.5 * bce + _reference_lovasz(logits, targets)
    assert float(combined) == pytest.approx(float(expected), rel=1e-6)
    both = create_loss("focal+lovasz")(logits, targets)
    expected = _reference_focal(logits, targets) + _reference_lovasz(logits, targets)
    assert float(both) == pytest.approx(float(expected), rel=1e-6)


def test_parse_loss_and_its_errors() -> None:
    assert parse_loss("focal+lovasz") == [("focal", 1.0), ("lovasz", 1.0)]
    assert parse_loss(" BCE*0.5 + lovasz*2 ") == [("bce", 0.5), ("lovasz", 2.0)]
    for spec, message in [
        ("dice", "'dice' is not a loss"),
        ("bce*0", "the weight of bce must be positive"),
        ("bce*nan", "the weight of bce must be positive"),
        ("bce*x", "weight 'x' of bce is not a number"),
        ("bce+bce", "bce is named twice"),
        ("", "is empty"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse_loss(spec)


def test_lovasz_matches_the_reference_on_many_random_batches() -> None:
    gen = torch.Generator().manual_seed(3)
    for n, classes in itertools.product((1, 2, 5, 9), (1, 3)):
        logits = torch.randn(n, classes, generator=gen, dtype=torch.float64) * 3
        targets = (torch.rand(n, classes, generator=gen) < 0.3).double()
        assert float(lovasz_hinge(logits, targets)) == pytest.approx(
            float(_reference_lovasz(logits, targets)), rel=1e-6, abs=1e-9
        )


def test_head_bias_prior_starts_at_the_class_log_odds() -> None:
    """--head-bias prior (issue 19, item 6): the classifier's bias is the log-odds of each
    class's frequency, so an untrained model predicts the base rates and the first BCE is the
    rates' entropy, not the 0.69 a class of a head at 0."""
    import numpy as np

    from hpatool.engine.models.factory import create_model
    from hpatool.engine.training.build import init_head_bias

    torch.manual_seed(0)
    model = create_model("resnet10t", in_chans=4, num_classes=28).eval()
    freq = np.linspace(0.001, 0.4, 28)
    freq[3] = 0.0  # a class never seen: clipped, not -inf
    assert init_head_bias(model, freq)
    bias = model.get_classifier().bias.detach().double().numpy()
    clipped = np.clip(freq, 1e-4, 1 - 1e-4)
    assert np.allclose(bias, np.log(clipped / (1 - clipped)), atol=1e-5)
    # a batch labelled at those rates: the first loss with the prior is much lower than at 0
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, 64, 64, generator=gen)
    y = (torch.rand(64, 28, generator=gen) < torch.from_numpy(freq).float()).float()
    with torch.no_grad():
        prior = F.binary_cross_entropy_with_logits(model(x), y).item()
        model.get_classifier().bias.zero_()
        zero = F.binary_cross_entropy_with_logits(model(x), y).item()
    # at 0 every class costs log 2; with the prior, about the entropy of its rate
    entropy = float(np.mean(-(clipped * np.log(clipped) + (1 - clipped) * np.log(1 - clipped))))
    assert zero == pytest.approx(np.log(2), abs=0.02)
    assert prior == pytest.approx(entropy, abs=0.05) and prior < zero - 0.2, (prior, zero)
