"""Score images by the prior's likelihood: `python -m lesion_lightning.score pixelcnn_ckpt=PATH images=DIR`.

Per-image bits/dim (raw and corrected by the per-position marginal baseline) into scores.csv, NLL heatmap
pictures of the highest and lowest, and with ood=DIR2 the AUROC / AUPR of telling the two folders apart.
The logic lives in lesion_lightning.metrics.scoring; see its docstring for the outputs.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lesion_lightning.metrics.scoring import score


@hydra.main(version_base="1.3", config_path="../conf", config_name="score")
def main(cfg: DictConfig) -> None:
    score(cfg)


if __name__ == "__main__":
    main()
