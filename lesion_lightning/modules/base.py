"""What every stage's LightningModule shares: its optimizer from its hyper-parameters, and a checkpoint
that names the module kind (modules/checkpoints.py refuses a checkpoint of the wrong kind by that name)."""

from __future__ import annotations

import lightning as L

from lesion_lightning.modules.optim import adam_with_schedule


class LesionModule(L.LightningModule):
    """Base of VQVAEModule, PixelCNNModule and ClassifierModule; their hparams hold lr, weight_decay,
    scheduler and warmup_steps."""

    def configure_optimizers(self):
        h = self.hparams
        return adam_with_schedule(
            self.parameters(),
            h.lr,
            h.weight_decay,
            h.scheduler,
            h.warmup_steps,
            self.trainer.estimated_stepping_batches,
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lesion_lightning"] = {"module": type(self).__name__}
