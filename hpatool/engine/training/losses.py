"""The training losses of ``--loss``: BCE, sigmoid focal, the Lovász hinge, and weighted sums.

``--loss`` is one name or a weighted sum of them: ``bce``, ``focal``, ``lovasz``,
``focal+lovasz`` (weights 1), ``bce*0.5+lovasz*1``. Each term is a mean over the batch:

- ``bce``: binary cross-entropy with logits, mean over samples and classes;
- ``focal``: the sigmoid focal loss of Lin et al. 2017, ``(1 - p_t)^gamma * BCE`` (gamma 2, no
  alpha), mean over samples and classes;
- ``lovasz``: the Lovász hinge of Berman et al. 2018, a convex surrogate of the Jaccard loss
  ``1 - |TP| / |TP + FP + FN|``, computed **per class over the batch** (as the 2018 HPA winner
  used it for multi-label F1: for class c, the batch's samples are the "pixels") and averaged
  over the classes. A class with no positive in the batch still has a loss: its false
  positives (the hinge errors of its highest-scoring negatives).

Validation loss stays BCE whatever ``--loss`` (``engine.training.steps.validate``), so runs compare.
Parsing needs no torch (``engine.parsing.parse_loss``, used by ``TrainConfig.validate`` too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from hpatool.engine.parsing import parse_loss

if TYPE_CHECKING:
    import torch

FOCAL_GAMMA = 2.0

LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, gamma: float = FOCAL_GAMMA
) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017) with ``gamma``, no alpha, mean over elements."""
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = (-bce).exp()
    return ((1 - p_t) ** gamma * bce).mean()


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """The gradient of the Lovász extension of the Jaccard loss at the sorted errors: for
    ground truth sorted by decreasing error (``(C, n)``), the increments of
    ``1 - |gt \\ M_i| / |gt U M_i|`` as the set ``M_i`` of the i largest errors grows."""
    gts = gt_sorted.sum(dim=1, keepdim=True)
    intersection = gts - gt_sorted.cumsum(dim=1)
    union = gts + (1 - gt_sorted).cumsum(dim=1)
    jaccard = 1.0 - intersection / union
    return jaccard.diff(dim=1, prepend=jaccard.new_zeros(jaccard.shape[0], 1))


def lovasz_hinge(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The Lovász hinge (Berman et al. 2018) of each class over the batch, averaged over the
    classes: for class c, the hinge errors ``1 - logit * sign`` (sign +1 for a positive, -1
    for a negative) of the batch's samples, sorted in decreasing order, weighted by the
    gradient of the Jaccard loss's Lovász extension (``_lovasz_grad``), only their positive
    part counting."""
    import torch.nn.functional as F

    logits_t = logits.float().t()  # (C, n): each class's samples in a row
    labels = targets.float().t()
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits_t * signs
    errors_sorted, order = errors.sort(dim=1, descending=True)
    gt_sorted = labels.gather(1, order)
    grad = _lovasz_grad(gt_sorted)
    return (F.relu(errors_sorted) * grad).sum(dim=1).mean()


def _term(name: str) -> LossFn:
    import torch.nn.functional as F

    if name == "bce":
        return F.binary_cross_entropy_with_logits
    if name == "focal":
        return focal_loss
    return lovasz_hinge


def create_loss(spec: str) -> LossFn:
    """The training loss of ``--loss spec``: one term, or the weighted sum of several."""
    terms = [(_term(name), weight) for name, weight in parse_loss(spec)]
    if len(terms) == 1 and terms[0][1] == 1.0:
        return terms[0][0]

    def combined(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = terms[0][1] * terms[0][0](logits, targets)
        for fn, weight in terms[1:]:
            total = total + weight * fn(logits, targets)
        return total

    return combined
