"""Scores of the downstream-utility stage: classification metrics on real test images, a paired
bootstrap over those images for the arms' intervals and differences, and class fidelity of samples.

Metrics (torchmetrics, on the real test split; one value per trained classifier):

* ``macro_auroc``: one-vs-rest ROC AUC per class, averaged over classes (unweighted);
* ``melanoma_auroc``: ROC AUC of p(melanoma) for melanoma vs every other class (when melanoma is a class);
* ``balanced_accuracy``: per-class recall of the arg-max prediction, averaged over classes.

Intervals: a **stratified paired bootstrap over test images** (thousands of metric evaluations, so the
resamples are scored by :func:`batched_scores`, a vectorised form of the same definitions that the
tests check against torchmetrics). Each resample draws, within every
class, as many test images as the class has, with replacement (so every class keeps its size and
AUC stays defined); the SAME image indices score every arm and every seed. Per resample, an arm's
metric is computed per seed and averaged over seeds (the statistic reported: the seed-mean), and a
difference is arm minus the real-only arm on that resample. The 2.5 / 97.5 percentiles give 95 %
intervals. They cover test-image sampling noise; the seed spread (sd over seeds) is reported beside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_auroc,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_recall,
)
from tqdm.auto import tqdm

from lesion_lightning.metrics.stats import Interval

MELANOMA = "melanoma"
# fewer real test images than this in some class: intervals are wide, the table flags the figures
NOISY_CLASS_SIZE = 30
BOOT_CHUNK = 100


@dataclass(frozen=True)
class Task:
    """All classes of the prior, plus melanoma-vs-rest when melanoma is one of them."""

    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def melanoma(self) -> int | None:
        return self.class_names.index(MELANOMA) if MELANOMA in self.class_names else None

    @property
    def metrics(self) -> tuple[str, ...]:
        mel = ("melanoma_auroc",) if self.melanoma is not None else ()
        return ("macro_auroc", *mel, "balanced_accuracy")


def score(probs: Tensor, labels: Tensor, task: Task) -> dict[str, float | None]:
    """The task's metrics for one classifier's ``(N, C)`` probabilities; None where undefined
    (AUC needs positives and negatives of every class scored)."""
    c = task.num_classes
    present = torch.bincount(labels, minlength=c)
    out: dict[str, float | None] = {}
    out["macro_auroc"] = (
        float(multiclass_auroc(probs, labels, num_classes=c, average="macro"))
        if bool((present > 0).all())
        else None
    )
    if task.melanoma is not None:
        m = task.melanoma
        positives = int(present[m])
        out["melanoma_auroc"] = (
            float(binary_auroc(probs[:, m], (labels == m).long())) if 0 < positives < len(labels) else None
        )
    out["balanced_accuracy"] = float(multiclass_accuracy(probs, labels, num_classes=c, average="macro"))
    return out


def _auroc_rows(scores: Tensor, positive: Tensor) -> Tensor:
    """ROC AUC of every row: ``(B, N)`` scores and boolean labels -> ``(B,)`` (NaN where a row lacks a class).

    Mann-Whitney form with mid-ranks for ties, which equals the area under the exact ROC curve that
    torchmetrics computes (tied scores count one half).
    """
    b, n = scores.shape
    ordered, order = scores.double().sort(dim=1)
    positive = positive.gather(1, order).double()
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = starts.long().cumsum(1) - 1  # (B, N) tie group of each sorted position
    ranks = torch.arange(1, n + 1, dtype=torch.float64, device=scores.device).expand(b, n)
    total = torch.zeros_like(ordered).scatter_add_(1, group, ranks)
    size = torch.zeros_like(ordered).scatter_add_(1, group, torch.ones_like(ranks))
    midrank = (total / size.clamp_min(1)).gather(1, group)  # 1-based rank, ties averaged
    n_pos = positive.sum(1).double()
    n_neg = positive.shape[1] - n_pos
    rank_sum = (midrank * positive).sum(1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def batched_scores(probs: Tensor, labels: Tensor, idx: Tensor, task: Task) -> dict[str, Tensor]:
    """:func:`score` on every bootstrap resample at once: ``idx`` ``(B, N)`` rows of test-image indices."""
    c = task.num_classes
    p = probs.double()[idx]  # (B, N, C)
    y = labels[idx]  # (B, N)
    out = {}
    onehot = torch.nn.functional.one_hot(y, c).bool()  # (B, N, C)
    per_class = torch.stack([_auroc_rows(p[..., k].contiguous(), onehot[..., k]) for k in range(c)], 1)
    out["macro_auroc"] = per_class.mean(1)
    if task.melanoma is not None:
        # one-vs-rest for the melanoma column is exactly melanoma-vs-rest on p(melanoma)
        out["melanoma_auroc"] = per_class[:, task.melanoma]
    pred = p.argmax(-1)
    tp = ((pred == y).unsqueeze(-1) & onehot).sum(1).double()  # (B, C)
    support = onehot.sum(1).double()
    predicted = torch.nn.functional.one_hot(pred, c).sum(1).double()
    recall = torch.where(support > 0, tp / support.clamp_min(1), torch.zeros_like(tp))
    # torchmetrics' macro average leaves out classes neither in the labels nor predicted
    counted = (support + predicted) > 0
    out["balanced_accuracy"] = (recall * counted).sum(1) / counted.sum(1)
    return out


def _stratified_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    parts = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        parts.append(rng.choice(members, size=len(members), replace=True))
    return np.concatenate(parts)


def _interval(values: np.ndarray) -> list[float] | None:
    """The 95 % percentile-bootstrap interval's `_ci` value; None when no replicate is finite."""
    interval = Interval.percentile(values)
    return interval.to_json() if interval.finite else None


def _mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return float(np.mean(vals)), sd


def compare_arms(
    probs: Mapping[str, Sequence[Tensor]],
    labels: Tensor,
    task: Task,
    reference: str,
    num_resamples: int = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict:
    """Per arm: per-seed metrics, mean and sd over seeds, 95 % bootstrap interval of the seed-mean;
    per arm other than ``reference``: the difference to it with its paired 95 % interval.

    ``probs[arm]`` holds one ``(N, C)`` tensor per seed, rows aligned with ``labels`` (the test images).
    """
    arms = list(probs)
    metrics = task.metrics
    result: dict = {"arms": {}, "differences": {}, "num_resamples": int(num_resamples)}
    point = {}
    for arm in arms:
        per_seed = [score(p, labels, task) for p in probs[arm]]
        entry: dict = {"per_seed": per_seed, "mean": {}, "sd": {}, "mean_ci": {}}
        for m in metrics:
            entry["mean"][m], entry["sd"][m] = _mean_sd([s[m] for s in per_seed])
        point[arm] = entry["mean"]
        result["arms"][arm] = entry

    y = labels.numpy()
    rng = np.random.default_rng(seed)
    resamples = (
        np.stack([_stratified_indices(y, rng) for _ in range(num_resamples)]) if num_resamples else None
    )
    boot = np.full((num_resamples, len(arms), len(metrics)), np.nan)
    for lo in tqdm(range(0, num_resamples, BOOT_CHUNK), desc="paired bootstrap", unit="chunk", leave=False):
        idx = torch.from_numpy(resamples[lo : lo + BOOT_CHUNK]).to(device)
        for a, arm in enumerate(arms):
            per_seed = [batched_scores(p.to(device), labels.to(device), idx, task) for p in probs[arm]]
            for k, m in enumerate(metrics):
                # (seeds, B) -> seed-mean per resample; NaN (undefined AUC) stays NaN
                boot[lo : lo + len(idx), a, k] = torch.stack([s[m] for s in per_seed]).mean(0).cpu().numpy()
    for a, arm in enumerate(arms):
        for k, m in enumerate(metrics):
            result["arms"][arm]["mean_ci"][m] = _interval(boot[:, a, k]) if num_resamples else None
    ref = arms.index(reference)
    for a, arm in enumerate(arms):
        if arm == reference:
            continue
        diff: dict = {}
        for k, m in enumerate(metrics):
            x, r = point[arm][m], point[reference][m]
            diff[m] = {
                "mean": None if x is None or r is None else x - r,
                "mean_ci": _interval(boot[:, a, k] - boot[:, ref, k]) if num_resamples else None,
            }
        result["differences"][f"{arm} - {reference}"] = diff
    return result


def class_fidelity(
    generated: Sequence[Tensor],
    generated_labels: Tensor,
    real: Sequence[Tensor],
    real_labels: Tensor,
    task: Task,
    num_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict]:
    """Per class: how often the classifiers (one ``(N, C)`` tensor per seed) call a generated sample
    of that class by its label, beside the same rate (recall) on real test images of the class.

    Mean and sd over seeds, and a 95 % bootstrap interval of the seed-mean over the images.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}

    def rates(probs: Sequence[Tensor], labels: Tensor) -> tuple[list[float], np.ndarray]:
        per_seed = [
            multiclass_recall(p, labels, num_classes=task.num_classes, average=None).tolist() for p in probs
        ]
        # (seeds, N) 1 where the arg-max is the image's own label
        correct = np.stack([(p.argmax(-1) == labels).numpy() for p in probs]).astype(np.float64)
        return per_seed, correct

    gen_recall, gen_correct = rates(generated, generated_labels) if len(generated_labels) else ([], None)
    real_recall, real_correct = rates(real, real_labels)
    for c, name in enumerate(task.class_names):
        entry: dict = {}
        for prefix, recall, correct, labels in (
            ("generated", gen_recall, gen_correct, generated_labels),
            ("real_test", real_recall, real_correct, real_labels),
        ):
            members = np.flatnonzero(labels.numpy() == c) if len(labels) else np.array([], dtype=int)
            entry[f"n_{prefix}"] = int(len(members))
            if len(members) == 0 or correct is None:
                entry[f"{prefix}_accuracy"] = entry[f"{prefix}_sd"] = entry[f"{prefix}_accuracy_ci"] = None
                continue
            mean, sd = _mean_sd([r[c] for r in recall])
            cols = correct[:, members]  # (seeds, n_c)
            boot = np.array(
                [cols[:, rng.integers(0, len(members), len(members))].mean() for _ in range(num_resamples)]
            )
            entry[f"{prefix}_accuracy"], entry[f"{prefix}_sd"] = mean, sd
            entry[f"{prefix}_accuracy_ci"] = _interval(boot) if num_resamples else None
        out[name] = entry
    return out
