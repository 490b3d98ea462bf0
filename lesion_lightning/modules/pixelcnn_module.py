"""Stage 2: the Gated PixelCNN prior over code grids, as a thin LightningModule."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from lesion_lightning.models.pixelcnn import GatedPixelCNN
from lesion_lightning.models.sampling import SamplingOptions
from lesion_lightning.modules.base import LesionModule


class PixelCNNModule(LesionModule):
    """Cross-entropy over the K codes at every grid position.

    Logs `{stage}/loss` (nats per position), `{stage}/bits_per_dim` (loss / ln 2) and
    `{stage}/accuracy` (top-1 code). Records which VQ-VAE produced its training indices
    (`vqvae_ckpt`, `vqvae_fingerprint`) so sample/evaluate can refuse a mismatched pair.

    ``cond_dropout`` p > 0 (class-conditional priors): the network gets a learned "no class" label and
    each training grid's label is replaced by it with probability p, so the prior also learns the
    unconditional distribution that classifier-free guidance (``sample ... guidance=w``) needs.
    Validation and test always use the real labels.
    """

    def __init__(
        self,
        net: dict,
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        scheduler: str | None = "cosine",
        warmup_steps: int = 0,
        num_log_samples: int = 4,
        sample_temperature: float = 1.0,
        compile: bool = False,
        vqvae_ckpt: str | None = None,
        vqvae_fingerprint: str | None = None,
        class_names: list[str] | None = None,
        index_dataset: str | None = None,
        cond_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if net.get("num_codes") is None:
            raise ValueError(
                "model.net.num_codes is not set: train with data=indices data.root=<encode output> "
                "(it fills the codebook size) or set it explicitly"
            )
        if not isinstance(cond_dropout, int | float) or not 0 <= cond_dropout < 1:
            raise ValueError(f"model.cond_dropout must be a number in [0, 1), got {cond_dropout!r}")
        # the "no class" label exists exactly when training drops labels: derived here, never configured
        net = {**net, "num_classes": net.get("num_classes") or 0, "null_class": cond_dropout > 0}
        self.net = GatedPixelCNN(**net)
        if compile:
            self.net.compile()
        k = self.net.num_codes
        self.accuracy = torch.nn.ModuleDict(
            {f"{s}_acc": MulticlassAccuracy(num_classes=k, average="micro") for s in ("train", "val", "test")}
        )

    @property
    def conditional(self) -> bool:
        return self.net.num_classes > 0

    def forward(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(indices, labels if self.conditional else None)

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        indices = batch["indices"]
        labels = batch.get("label")
        if stage == "train" and self.net.null_class and labels is not None:
            dropped = torch.rand(labels.shape, device=labels.device) < self.hparams.cond_dropout
            labels = labels.masked_fill(dropped, self.net.null_label)
        logits = self(indices, labels)
        # (B, K, H, W) logits straight into cross-entropy: no (B*H*W, K) copy (autocast runs it in float32)
        loss = F.cross_entropy(logits, indices)
        on_step = stage == "train"
        kw = {"on_step": on_step, "on_epoch": True, "sync_dist": not on_step, "batch_size": indices.size(0)}
        self.log(f"{stage}/loss", loss, prog_bar=True, **kw)
        self.log(f"{stage}/bits_per_dim", loss / math.log(2), prog_bar=stage != "train", **kw)
        accuracy = self.accuracy[f"{stage}_acc"]
        accuracy(logits.detach(), indices)
        self.log(f"{stage}/accuracy", accuracy, on_step=False, on_epoch=True, batch_size=indices.size(0))
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    # ------------------------------------------------------------------ samples for the image logger
    @torch.no_grad()
    def codes_for_logging(self, batch: dict) -> dict[str, tuple[torch.Tensor, int]]:
        """Code grids sampled from a fixed seed (one per class when conditional), comparable across epochs.

        The ImageLogger decodes them with the VQ-VAE recorded in `vqvae_ckpt`; the prior knows no decoder.
        """
        n = self.hparams.num_log_samples
        h, w = batch["indices"].shape[-2:]
        labels = (torch.arange(n, device=self.device) % self.net.num_classes) if self.conditional else None
        g = torch.Generator(device=self.device).manual_seed(0)
        options = SamplingOptions(temperature=self.hparams.sample_temperature)
        grids = self.net.generate(n, h, w, labels=labels, options=options, generator=g)
        return {"samples": (grids, n)}
