"""Generate lesions: `python -m lesion_lightning.sample pixelcnn_ckpt=PATH vqvae_ckpt=PATH num_samples=N`.

Writes sample_0000.png ... one per sample, grid.png and samples.json (what was run, how long it took)
into a temporary folder renamed when complete. Same seed, same images (see lesion_lightning/samples/).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lesion_lightning.samples.folder import sample_to_folder


def stage(cfg: DictConfig) -> Path:
    return sample_to_folder(cfg)


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    stage(cfg)


if __name__ == "__main__":
    main()
