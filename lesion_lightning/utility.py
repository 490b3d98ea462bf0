"""Do the generated lesions help? `python -m lesion_lightning.utility vqvae_ckpt=PATH pixelcnn_ckpt=PATH
[samples_dir=DIR]`: classifiers trained on real, real + generated and generated-only lesions, tested on
the real test split (see lesion_lightning/downstream/ and docs/utility.md)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lesion_lightning.downstream.stage import run_utility


def stage(cfg: DictConfig) -> dict:
    return run_utility(cfg)


@hydra.main(version_base="1.3", config_path="../conf", config_name="utility")
def main(cfg: DictConfig) -> None:
    stage(cfg)


if __name__ == "__main__":
    main()
