"""The utility stage's labelled samples: ``samples_dir``'s first, the shortfall generated per class into
``<out>/generated/<class>/`` (reused on a re-run when this prior made them with the same seed and
temperature)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lesion_lightning.data.generated import LabelledSamples, SamplesFolder
from lesion_lightning.samples.config import sample_config
from lesion_lightning.samples.folder import sample_to_folder

log = logging.getLogger(__name__)


def _sample_config(cfg: DictConfig, label: str, num_samples: int, seed: int, out_dir: Path) -> DictConfig:
    """conf/sample.yaml with this stage's sampling settings, as `python -m lesion_lightning.sample` would."""
    settings = OmegaConf.to_container(cfg.sampling, resolve=True)
    return sample_config(
        **{
            **settings,
            "pixelcnn_ckpt": str(cfg.pixelcnn_ckpt),
            "vqvae_ckpt": str(cfg.vqvae_ckpt),
            "num_samples": int(num_samples),
            "label": label,
            "seed": int(seed),
            "out_dir": str(out_dir),
            "overwrite": True,
        }
    )


def gather_samples(
    cfg: DictConfig, class_names: list[str], needed: dict[str, int], out_dir: Path, vqvae_fingerprint: str
) -> tuple[dict[str, list[Path]], dict]:
    """``needed[c]`` labelled sample files per class: samples_dir's first, the shortfall generated."""
    pool: dict[str, list[Path]] = {c: [] for c in class_names}
    info: dict = {"samples_dir": None, "from_samples_dir": {}, "generated": {}}
    if cfg.samples_dir:
        folder = SamplesFolder.read(cfg.samples_dir)
        folder.check_vqvae(vqvae_fingerprint, f"vqvae_ckpt={cfg.vqvae_ckpt}")
        given = folder.labelled()
        unknown = sorted(set(given.labels) - set(class_names))
        if unknown:
            raise ValueError(f"samples_dir={cfg.samples_dir} holds classes {unknown} the data does not have")
        for c in class_names:
            pool[c] = given.of_class(c)[: needed[c]]
        info["samples_dir"] = str(Path(cfg.samples_dir).resolve())
        info["from_samples_dir"] = {c: len(pool[c]) for c in class_names}
    for i, c in enumerate(class_names):
        short = needed[c] - len(pool[c])
        if short <= 0:
            continue
        target = out_dir / "generated" / c
        # a seed per class, away from the sample stage's (seed 0, mixed classes)
        seed = int(cfg.sampling.seed) + 1000 * (i + 1)
        reused = _reusable(target, c, short, seed, cfg)
        if reused is None:
            log.info("generating %d %s samples into %s", short, c, target)
            sample_to_folder(_sample_config(cfg, c, short, seed, target))
            reused = SamplesFolder.read(target).labelled()
        pool[c] += reused.of_class(c)[:short]
        info["generated"][c] = short
    return pool, info


def _reusable(target: Path, label: str, count: int, seed: int, cfg: DictConfig) -> LabelledSamples | None:
    """A previous attempt's generated folder, if this prior made it with this seed and temperature
    (the image of sample n depends on nothing else: not the batch size, device or sampler)."""
    if not SamplesFolder.present(target):
        return None
    found = SamplesFolder.read(target)
    same = (
        found.pixelcnn_ckpt == str(Path(cfg.pixelcnn_ckpt).resolve())
        and found.settings.get("seed") == seed
        and found.settings.get("temperature") == cfg.sampling.temperature
        and len(found.labelled().of_class(label)) >= count
    )
    return found.labelled() if same else None
