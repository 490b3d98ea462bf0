"""Stage 1: the VQ-VAE as a thin LightningModule around `models.vqvae.VQVAE`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from lesion_lightning.metrics.codebook import CodebookUsage
from lesion_lightning.models.vqvae import VQVAE
from lesion_lightning.modules.base import LesionModule


class VQVAEModule(LesionModule):
    """loss = MSE(recon, x) + codebook + beta * commitment (beta inside the quantizer).

    Logs `{stage}/loss`, `recon_loss`, `codebook_loss`, `commitment_loss`; on val/test also PSNR (mean of
    per-image PSNR), SSIM, codebook usage and perplexity accumulated over the whole epoch.
    """

    def __init__(
        self,
        net: dict,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        scheduler: str | None = None,
        warmup_steps: int = 0,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = VQVAE(**net)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if compile:
            # in place, so state-dict keys stay loadable by an uncompiled model
            self.net.compile()
        k = self.net.quantizer.codebook_size
        # dim=(1, 2, 3): the mean over images of 10 log10(1 / MSE_i), as papers report PSNR; the default
        # (dim=None) is the PSNR of the MSE pooled over the epoch, up to several dB higher
        self.psnr = torch.nn.ModuleDict(
            {s: PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)) for s in ("val", "test")}
        )
        self.ssim = torch.nn.ModuleDict(
            {s: StructuralSimilarityIndexMeasure(data_range=1.0) for s in ("val", "test")}
        )
        self.usage = torch.nn.ModuleDict({s: CodebookUsage(k) for s in ("val", "test")})

    def forward(self, x: torch.Tensor):
        return self.net(x)

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        x = batch["image"]
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.net(x)
        recon_loss = F.mse_loss(out.recon.float(), x.float())
        loss = recon_loss + out.vq_loss
        on_step = stage == "train"
        self.log_dict(
            {
                f"{stage}/recon_loss": recon_loss,
                f"{stage}/codebook_loss": out.codebook_loss,
                f"{stage}/commitment_loss": out.commitment_loss,
            },
            on_step=on_step,
            on_epoch=True,
            prog_bar=False,
            sync_dist=not on_step,
            batch_size=x.size(0),
        )
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            sync_dist=not on_step,
            batch_size=x.size(0),
        )
        if stage != "train":
            recon = out.recon.float().clamp(0, 1)
            self.psnr[stage](recon, x.float())
            self.ssim[stage](recon, x.float())
            self.usage[stage].update(out.indices)
            self.log(f"{stage}/psnr", self.psnr[stage], on_epoch=True, prog_bar=True, batch_size=x.size(0))
            self.log(f"{stage}/ssim", self.ssim[stage], on_epoch=True, batch_size=x.size(0))
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def _log_usage(self, stage: str) -> None:
        stats = self.usage[stage].compute()
        self.log(f"{stage}/codebook_usage", stats["codebook_usage"], prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/perplexity", stats["perplexity"], sync_dist=True)
        self.usage[stage].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_usage("val")

    def on_test_epoch_end(self) -> None:
        self._log_usage("test")

    @torch.no_grad()
    def images_for_logging(self, batch: dict) -> dict[str, tuple[torch.Tensor, int]]:
        """Originals (top row) above their reconstructions (bottom row)."""
        x = batch["image"]
        recon = self.net(x).recon.clamp(0, 1)
        return {"reconstructions": (torch.cat([x, recon.to(x.dtype)]), x.size(0))}
