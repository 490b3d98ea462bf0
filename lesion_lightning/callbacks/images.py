"""Pictures where people look: the same images every N epochs, as PNG files and in the loggers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torchvision.utils import make_grid

from lesion_lightning.modules.checkpoints import load_vqvae
from lesion_lightning.utils.io import save_png


class ImageLogger(L.Callback):
    """Logs `pl_module.images_for_logging(batch)` on a fixed validation batch.

    Each LightningModule decides what its pictures are (VQ-VAE: originals above reconstructions;
    PixelCNN: `codes_for_logging`, code grids from a fixed seed, which this callback decodes with the
    VQ-VAE the prior records in `hparams.vqvae_ckpt`); this callback owns when, where and how they are
    written, so pictures from epoch 3 and epoch 30 show the same lesions and compare directly.
    """

    def __init__(self, every_n_epochs: int = 1, num_images: int = 8, save_dir: str | None = None) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"callbacks.image_logger.every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.save_dir = Path(save_dir) if save_dir else None
        self._batch: dict | None = None
        self.saved: list[Path] = []
        # VQ-VAE decoder for code grids, loaded on first use (False: tried, not available)
        self._decoder: torch.nn.Module | bool | None = None

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self._batch is None and batch_idx == 0:
            self._batch = {k: v[: self.num_images] for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._batch is None:
            return
        if not (hasattr(pl_module, "images_for_logging") or hasattr(pl_module, "codes_for_logging")):
            return
        epoch = trainer.current_epoch
        last_epoch = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.every_n_epochs != 0 and not last_epoch:
            return
        # every rank runs the model (sampling may use collective-free code only), rank zero writes
        batch = {k: v.to(pl_module.device) for k, v in self._batch.items()}
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            images = self._images(pl_module, batch)
        pl_module.train(was_training)
        self._write(trainer, images, epoch)

    def _images(self, pl_module: L.LightningModule, batch: dict) -> dict[str, tuple[torch.Tensor, int]]:
        if hasattr(pl_module, "images_for_logging"):
            return pl_module.images_for_logging(batch)
        decoder = self._load_decoder(pl_module)
        if decoder is None:
            return {}
        codes = pl_module.codes_for_logging(batch)
        return {
            name: (decoder.to(grids.device).decode_indices(grids).clamp(0, 1), nrow)
            for name, (grids, nrow) in codes.items()
        }

    def _load_decoder(self, pl_module: L.LightningModule) -> torch.nn.Module | None:
        if self._decoder is None:
            path = pl_module.hparams.get("vqvae_ckpt")
            if not path or not Path(path).is_file():
                rank_zero_warn(f"PixelCNN sample images skipped: VQ-VAE checkpoint {path!r} not found")
                self._decoder = False
            else:
                self._decoder = load_vqvae(path).net.requires_grad_(False)
        return self._decoder or None

    @rank_zero_only
    def _write(self, trainer: L.Trainer, images: dict[str, tuple[torch.Tensor, int]], epoch: int) -> None:
        for name, (tensor, nrow) in images.items():
            grid = make_grid(tensor.float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0)
            if self.save_dir is not None:
                self.saved.append(save_png(grid, self.save_dir / f"{name}_epoch{epoch:03d}.png"))
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(
                        key=f"val/{name}", images=[grid], step=trainer.global_step, caption=[f"epoch {epoch}"]
                    )
                elif isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(f"val/{name}", grid, global_step=trainer.global_step)
