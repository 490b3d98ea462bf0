"""Stage 2: the Gated PixelCNN prior over code grids, as a thin LightningModule."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lesion_lightning.models.pixelcnn import GatedPixelCNN
from lesion_lightning.models.sampling import SamplingOptions
from lesion_lightning.modules.base import LesionModule
from lesion_lightning.modules.ema import EMA


class PixelCNNModule(LesionModule):
    """Cross-entropy over the K codes at every grid position.

    Logs `{stage}/loss` (nats per position), `{stage}/bits_per_dim` (loss / ln 2) and
    `{stage}/accuracy` (top-1 code). Records which VQ-VAE produced its training indices
    (`vqvae_ckpt`, `vqvae_fingerprint`) so sample/evaluate can refuse a mismatched pair.

    ``cond_dropout`` p > 0 (class-conditional priors): the network gets a learned "no class" label and
    each training grid's label is replaced by it with probability p, so the prior also learns the
    unconditional distribution that classifier-free guidance (``sample ... guidance=w``) needs.
    Validation and test always use the real labels.

    Generalization: with the index datamodule's train probe (val dataloader 1: un-augmented train
    grids, as many as val) every validation epoch also logs `train/eval_bits_per_dim`, the train
    images scored exactly like val (eval mode: no dropout, the same -- EMA -- weights), and
    `val/gap_bits_per_dim` = val - train on that scale. `train/bits_per_dim` is the running training
    loss (dropout on, weights moving, augmented views), not comparable with val.

    ``ema_decay`` (e.g. 0.999): an EMA of the weights (modules/ema.py) used for validation, for the
    checkpoint chosen by val/loss, for the image logger's samples, and saved as the checkpoint's
    weights, so sample / evaluate / score load the averaged prior. None = off.
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
        ema_decay: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if ema_decay is not None:
            EMA(ema_decay)  # the clear error for a bad value now, not when fit starts
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
        # bits/dim of val and of the train probe (val dataloader 1), same weights, eval mode: their gap
        self.probe_bits = torch.nn.ModuleDict({f"{s}_bits": MeanMetric() for s in ("val", "train")})
        self._last_validation: dict | None = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Besides the module kind: the validation that preceded this save (for the best checkpoint: the
        one that selected it), read back by PriorCheckpoint.validation for evaluate and the sweep report."""
        super().on_save_checkpoint(checkpoint)
        if self._last_validation is not None:
            checkpoint["lesion_lightning"]["validation"] = {
                **self._last_validation,
                "weights": "ema" if self.hparams.ema_decay is not None else "raw",
            }

    def configure_callbacks(self) -> list:
        """The EMA of the weights (model.ema_decay), a callback so Lightning swaps it in for validation."""
        # fit only: test/validate after fit load checkpoints whose state_dict already holds the average
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        return [EMA(self.hparams.ema_decay)] if self.hparams.ema_decay is not None and fitting else []

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
        # add_dataloader_idx=False: with the train probe as val dataloader 1, val/loss keeps its name
        kw = {
            "on_step": on_step,
            "on_epoch": True,
            "sync_dist": not on_step,
            "batch_size": indices.size(0),
            "add_dataloader_idx": False,
        }
        self.log(f"{stage}/loss", loss, prog_bar=True, **kw)
        self.log(f"{stage}/bits_per_dim", loss / math.log(2), prog_bar=stage != "train", **kw)
        accuracy = self.accuracy[f"{stage}_acc"]
        accuracy(logits.detach(), indices)
        self.log(
            f"{stage}/accuracy",
            accuracy,
            on_step=False,
            on_epoch=True,
            batch_size=indices.size(0),
            add_dataloader_idx=False,
        )
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        if dataloader_idx == 1:  # the train probe (IndexDataModule.train_probe_rows)
            return self._probe_step(batch)
        loss = self._shared_step(batch, "val")
        self.probe_bits["val_bits"].update(loss.detach() / math.log(2), weight=batch["indices"].size(0))
        return loss

    def _probe_step(self, batch: dict) -> torch.Tensor:
        indices = batch["indices"]
        loss = F.cross_entropy(self(indices, batch.get("label")), indices)
        self.probe_bits["train_bits"].update(loss.detach() / math.log(2), weight=indices.size(0))
        return loss

    def on_validation_epoch_end(self) -> None:
        """`train/eval_bits_per_dim` (train images scored exactly like val) and `val/gap_bits_per_dim`."""
        val, train = self.probe_bits["val_bits"], self.probe_bits["train_bits"]
        if train.update_count == 0 or val.update_count == 0:
            return
        train_bits, val_bits = train.compute(), val.compute()
        if not self.trainer.sanity_checking:  # what the next checkpoint saved records (on_save_checkpoint)
            self._last_validation = {
                "val_bits_per_dim": float(val_bits),
                "train_eval_bits_per_dim": float(train_bits),
                "gap_bits_per_dim": float(val_bits - train_bits),
                "n_val": round(float(val.weight)),  # grids: MeanMetric's summed weights
                "n_train_probe": round(float(train.weight)),
                "epoch": int(self.current_epoch),
                "step": int(self.global_step),
            }
        self.log("train/eval_bits_per_dim", train_bits, sync_dist=True, add_dataloader_idx=False)
        self.log("val/gap_bits_per_dim", val_bits - train_bits, sync_dist=True, add_dataloader_idx=False)
        train.reset()
        val.reset()

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
