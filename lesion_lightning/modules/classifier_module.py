"""A lesion classifier as a thin LightningModule, and the helpers to reuse a trained one.

The downstream-utility stage (``python -m lesion_lightning.utility``) trains these on real and generated
lesions and saves the real-data ones as ``<out>/classifiers/real_seed<k>.ckpt``. To score other images
with one (e.g. the class fidelity of guided samples)::

    from lesion_lightning.modules.checkpoints import load_classifier
    from lesion_lightning.modules.classifier_module import predict_proba
    clf = load_classifier("<utility out>/classifiers/real_seed0.ckpt")
    probs = predict_proba(clf, images)  # images: (N, 3, S, S) float in [0, 1] -> (N, C) probabilities
    clf.hparams.class_names             # column order of probs
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

from lesion_lightning.models.classifier import build_classifier, load_imagenet_weights
from lesion_lightning.modules.base import LesionModule


class ClassifierModule(LesionModule):
    """Cross-entropy over ``class_names``; logs ``{stage}/loss``, ``{stage}/balanced_accuracy`` (mean
    per-class recall) and, outside training, ``{stage}/auroc`` (macro one-vs-rest).

    Args:
        net: ``{name: resnet18|small_cnn, ...}`` (see :func:`build_classifier`).
        class_names: label order; ``len(class_names)`` outputs.
        normalization, image_size: what the training images were (recorded so :func:`predict_proba`
            can prepare new images the same way).
        pretrained_weights: local ImageNet ResNet-18 weights loaded into the network at construction
            (recorded in the checkpoint; pass ``pretrained_weights=None`` to ``load_from_checkpoint``).
    """

    def __init__(
        self,
        net: dict,
        class_names: list[str],
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str | None = "cosine",
        warmup_steps: int = 0,
        normalization: str = "minmax",
        image_size: int | None = None,
        pretrained_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        net = dict(net)
        self.net = build_classifier(net.pop("name"), len(class_names), **net)
        if pretrained_weights:
            load_imagenet_weights(self.net, pretrained_weights)
        c = len(class_names)
        self.metrics = torch.nn.ModuleDict(
            {
                f"{s}_{m}": metric
                for s in ("train", "val", "test")
                for m, metric in (
                    ("bacc", MulticlassAccuracy(num_classes=c, average="macro")),
                    ("auroc", MulticlassAUROC(num_classes=c, average="macro")),
                )
            }
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def _shared_step(self, batch: dict, stage: str) -> Tensor:
        images, labels = batch["image"], batch["label"]
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        on_step = stage == "train"
        kw = {"on_step": on_step, "on_epoch": True, "batch_size": labels.size(0)}
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=not on_step, **kw)
        bacc = self.metrics[f"{stage}_bacc"]
        bacc(logits.detach(), labels)
        self.log(f"{stage}/balanced_accuracy", bacc, on_step=False, on_epoch=True, batch_size=labels.size(0))
        if stage != "train":  # AUROC keeps every prediction of the epoch: not worth it per training step
            auroc = self.metrics[f"{stage}_auroc"]
            auroc(logits.detach().softmax(-1), labels)
            self.log(f"{stage}/auroc", auroc, on_step=False, on_epoch=True, batch_size=labels.size(0))
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self(batch["image"]).softmax(-1)


def prepare_images(images: Tensor, normalization: str) -> Tensor:
    """Float ``(N, 3, S, S)`` images in [0, 1] -> the classifier's input normalisation.

    ``minmax`` stretches each image to [0, 1] (what the data module does to the uint8 cache; an image
    already normalised that way is unchanged), ``scale`` leaves [0, 1] images as they are.
    """
    if normalization == "scale":
        return images
    if normalization != "minmax":
        raise ValueError(f"normalization={normalization!r} is not one of ['minmax', 'scale']")
    flat = images.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1, 1)
    span = hi - lo
    return torch.where(span > 0, (images - lo) / span.clamp_min(1e-12), torch.zeros_like(images))


@torch.no_grad()
def predict_proba(model: ClassifierModule, images: Tensor | Iterable[Tensor], batch_size: int = 64) -> Tensor:
    """Class probabilities ``(N, C)`` (columns = ``model.hparams.class_names``), on the CPU.

    ``images``: a float ``(N, 3, S, S)`` tensor in [0, 1] or an iterable of such batches (e.g. a
    DataLoader's images), at the classifier's ``image_size``; they get its normalisation first.
    """
    hp = model.hparams
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    was_training = model.training
    model.eval()
    out = []
    try:
        for batch in batches:
            if batch.ndim != 4 or batch.shape[1] != 3:
                raise ValueError(f"predict_proba expects (N, 3, S, S) images, got shape {tuple(batch.shape)}")
            if hp.image_size and tuple(batch.shape[-2:]) != (hp.image_size, hp.image_size):
                raise ValueError(
                    f"the classifier was trained on {hp.image_size}x{hp.image_size} images, got "
                    f"{tuple(batch.shape[-2:])}; resize them first"
                )
            x = prepare_images(batch.to(model.device, torch.float32), hp.normalization)
            out.append(model(x).float().softmax(-1).cpu())
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros(0, len(hp.class_names))
    return torch.cat(out)
