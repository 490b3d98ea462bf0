"""``LesionDataModule``: ISIC layouts or synthetic lesions -> grouped split -> resized cache -> batches.

``prepare_data`` (once per node, on local rank 0, so every DDP rank shares its result): generate
the synthetic dataset if asked, read the layout, check the inputs, build or reuse the cache, find
duplicate images, write the split file and the bad-input and duplicate reports (the steps live in
:mod:`lesion_lightning.data.prepare`). ``setup`` (every rank): the same steps, which now find the
cache, duplicates and split on disk and only memory-map / load them.

The split is pinned: :meth:`LesionDataModule.state_dict` puts ``{"split_digest", "split_file"}`` into
every checkpoint (``ckpt["LesionDataModule"]``); ``data.split_file`` + ``data.split_digest`` make a
datamodule use exactly that split, or refuse when the images on disk no longer match it.

Items and batches are dicts: ``image`` float ``(3, S, S)`` in [0, 1], ``label`` long (index into
``class_names``), ``index`` long (position within the split, so encoded grids can be written to
row ``index`` of a per-split array).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from lesion_lightning.data.cache import Cache
from lesion_lightning.data.duplicates import DUPLICATE_MODES
from lesion_lightning.data.imageops import RESIZE_MODES
from lesion_lightning.data.layouts import LAYOUTS, BadItem, Record
from lesion_lightning.data.prepare import (
    BAD_REPORT,
    CacheSettings,
    SplitSettings,
    cache_images,
    choose_split,
    group_duplicates,
    read_inputs,
    remove_stale,
    report_duplicates,
)
from lesion_lightning.data.splits import SPLIT_CHANGE_MODES, SPLITS, assignment_digest, pinned_split
from lesion_lightning.data.transforms import ImageTransform, build_augment, check_normalization
from lesion_lightning.data.vocabulary import VOCABULARY, resolve_classes

__all__ = ["BAD_REPORT", "LesionDataModule", "SplitDataset"]
ISIC_HELP = (
    "Download ISIC images with the official CLI (pip install isic-cli), e.g.\n"
    "    isic image download --search 'diagnosis_3:\"Melanoma Invasive\"' {root}\n"
    "or the whole archive with `isic image download {root}`; the ISIC 2018/2019/2020 challenge "
    "folders work too (see README). Or train on generated lesions with data=synthetic."
)


def _plain(value: Any) -> Any:
    """DictConfig/ListConfig -> plain dict/list, so hparams hold primitives only."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


class SplitDataset(Dataset):
    """One split of the cache: rows of the memory-mapped array, their labels and ids.

    The memmap is opened lazily in each process (DataLoader workers get a picklable object).
    """

    def __init__(
        self,
        images_path: Path,
        rows: np.ndarray,
        labels: np.ndarray,
        ids: list[str],
        transform: ImageTransform,
    ):
        self.images_path = Path(images_path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ids = list(ids)
        self.transform = transform
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_images"] = None
        return state

    def raw_image(self, i: int) -> np.ndarray:
        """Item i as cached, before augmentation and normalization: (S, S, 3) uint8."""
        if self._images is None:
            self._images = np.load(self.images_path, mmap_mode="r")
        return np.array(self._images[self.rows[i]])  # a copy out of the memmap

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = self.raw_image(i)
        return {
            "image": self.transform(image),
            "label": torch.tensor(self.labels[i], dtype=torch.long),
            "index": torch.tensor(i, dtype=torch.long),
        }


@dataclass
class _State:
    layout: str
    records: list[Record]
    cache: Cache
    cache_root: Path
    split_file: Path
    split: dict[str, list[str]]
    split_digest: str
    bad: list[BadItem]
    report: Path | None
    duplicates: dict[str, Any]
    class_names: list[str]
    class_map: dict[str, int]


class LesionDataModule(L.LightningDataModule):
    """Dermoscopy images from any supported layout, split by lesion/patient, cached once, resized.

    Args:
        root: the data folder (``data.root``); see :mod:`lesion_lightning.data.layouts` for layouts.
        layout: ``auto`` or one of ``isic_archive, isic2018, isic2019, isic2020, folder``.
        image_size: side ``S`` of the square images the model sees.
        resize: ``squash`` (ignore aspect), ``center_crop`` (central square) or ``pad`` (black borders).
        normalization: ``minmax`` (per-image min-max to [0, 1], the report) or ``scale`` (/255).
        val_fraction, test_fraction, split_seed: the grouped, stratified split (see ``splits.py``).
        classes: ``None`` = every class present; a list selects classes (``[melanoma]``, labels in list
            order); a mapping merges them (``{melanoma: [melanoma], other: "*"}`` = melanoma vs rest,
            ``"*"`` = every class not named elsewhere). Images of unselected classes are left out.
            Names are the vocabulary in ``vocabulary.py`` (challenge codes like ``MEL`` work too).
        augment: an albumentations pipeline as a Hydra config (mapping with ``_target_``), train only.
        cache_dir: where caches, splits and bad-input reports go; default ``<root>/.lesion_cache`` if
            writable, else ``~/.cache/lesion_lightning/<root name>-<hash>``.
        on_bad_image: ``error`` (default: any bad input raises, naming the files) or ``skip`` (leave them
            out and list them with the reason in ``bad_images.csv`` next to the cache).
        synthetic: ``{num_images, image_size, seed, ...}`` (``write_synthetic_isic`` arguments): generate
            that synthetic ISIC-layout dataset at ``root`` on first use.
        min_image_size: images with a side below ``min(min_image_size, image_size)`` pixels are bad input.
        cache_workers: threads decoding images into the cache (default: all cores, at most 16).
        duplicates: ``group`` (exact and near copies join one split group), ``drop`` (keep one image of
            each group) or ``keep`` (report only); see :mod:`lesion_lightning.data.duplicates`.
        near_duplicate_threshold: largest ``1 - correlation`` of aligned thumbnails that counts as a near
            copy; ``None`` turns near-duplicate detection off (exact copies are still found).
        split_file, split_digest: a pinned split (written by an earlier run; checkpoints and index
            manifests record both): used exactly, or refused when the images on disk no longer match it.
        on_split_change: ``error`` (default) or ``reuse`` (keep the pinned split for the images that
            still exist; images added since are left out).
    """

    def __init__(
        self,
        root: str,
        layout: str = "auto",
        image_size: int = 256,
        resize: str = "squash",
        normalization: str = "minmax",
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        classes: Sequence[str] | Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        cache_dir: str | None = None,
        on_bad_image: str = "error",
        synthetic: Mapping[str, Any] | None = None,
        min_image_size: int = 32,
        cache_workers: int | None = None,
        duplicates: str = "group",
        near_duplicate_threshold: float | None = 0.008,
        split_file: str | None = None,
        split_digest: str | None = None,
        on_split_change: str = "error",
    ) -> None:
        super().__init__()
        root = str(root)
        classes, augment, synthetic = _plain(classes), _plain(augment), _plain(synthetic)
        cache_dir = None if cache_dir is None else str(cache_dir)
        # primitives only: the data config travels in every checkpoint (datamodule_hyper_parameters)
        self.save_hyperparameters()

        if layout != "auto" and layout not in LAYOUTS:
            raise ValueError(f"data.layout={layout!r} is not one of {['auto', *LAYOUTS]}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"data.resize={resize!r} is not one of {list(RESIZE_MODES)}")
        check_normalization(normalization)
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"data.on_bad_image={on_bad_image!r} must be 'error' or 'skip'")
        if duplicates not in DUPLICATE_MODES:
            raise ValueError(f"data.duplicates={duplicates!r} must be one of {list(DUPLICATE_MODES)}")
        if near_duplicate_threshold is not None and not 0 <= float(near_duplicate_threshold) < 1:
            raise ValueError(
                f"data.near_duplicate_threshold={near_duplicate_threshold!r} must be in [0, 1) (a 1 - correlation; "
                f"default 0.008) or null to turn near-duplicate detection off"
            )
        if on_split_change not in SPLIT_CHANGE_MODES:
            raise ValueError(
                f"data.on_split_change={on_split_change!r} must be one of {list(SPLIT_CHANGE_MODES)}"
            )
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"data.image_size must be a positive integer, got {image_size!r}")
        resolve_classes(classes, VOCABULARY)  # fail on a bad data.classes now, not after caching
        if synthetic is None and not Path(root).exists():
            raise FileNotFoundError(f"data.root={root} does not exist.\n" + ISIC_HELP.format(root=root))
        self._state: _State | None = None
        self.class_names: list[str] = []
        self.num_classes: int = 0

    # ------------------------------------------------------------------ preparation
    def prepare_data(self) -> None:
        self._state = self._prepare()

    def setup(self, stage: str | None = None) -> None:
        if self._state is None:
            self._state = self._prepare()

    def _ensure_synthetic(self, root: Path) -> None:
        from lesion_lightning.data.synthetic import synthetic_params_match, write_synthetic_isic

        params = dict(self.hparams.synthetic)
        if not (root / "metadata.csv").exists():
            rank_zero_info(f"generating {params.get('num_images')} synthetic lesions in {root}")
            try:
                write_synthetic_isic(root, progress=False, **params)
            except FileExistsError:
                if not (root / "metadata.csv").exists():
                    raise
        if not synthetic_params_match(root, **params):
            raise ValueError(
                f"data.root={root} holds a dataset that was not generated with data.synthetic={params}; "
                f"delete that folder or point data.root elsewhere"
            )

    def _cache_root(self, root: Path) -> Path:
        if self.hparams.cache_dir is not None:
            return Path(self.hparams.cache_dir)
        if os.access(root, os.W_OK):
            return root / ".lesion_cache"
        tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
        return Path.home() / ".cache" / "lesion_lightning" / f"{root.name}-{tag}"

    def _prepare(self) -> _State:
        hp = self.hparams
        root = Path(hp.root)
        if hp.synthetic is not None:
            self._ensure_synthetic(root)
        if not root.exists():
            raise FileNotFoundError(f"data.root={root} does not exist.\n" + ISIC_HELP.format(root=root))
        layout, records, fingerprints = read_inputs(root, hp.layout)
        cache_root = self._cache_root(root)
        remove_stale(cache_root)
        settings = CacheSettings(
            hp.image_size, hp.resize, hp.min_image_size, hp.on_bad_image, hp.cache_workers
        )
        cache, bad, report = cache_images(root, layout, records, fingerprints, cache_root, settings)
        # Split every readable record, whatever data.classes says, so an image keeps its split across
        # class selections (a "melanoma only" test image was never a training image of an all-class run).
        dups = group_duplicates(records, cache, hp.near_duplicate_threshold, hp.duplicates)
        split_settings = SplitSettings(
            hp.val_fraction,
            hp.test_fraction,
            hp.split_seed,
            hp.split_file,
            hp.split_digest,
            hp.on_split_change,
        )
        split_file, split, would_be = choose_split(cache_root, dups, split_settings)
        summary = report_duplicates(
            dups, records, cache, split, would_be, hp.duplicates, hp.near_duplicate_threshold
        )
        usable = dups.usable
        class_names, class_map = resolve_classes(hp.classes, {r.diagnosis for r in usable})
        if not any(r.diagnosis in class_map for r in usable):
            raise ValueError(
                f"data.classes={hp.classes} selects no images: the data holds "
                f"{sorted({r.diagnosis for r in usable})}"
            )
        self.class_names, self.num_classes = class_names, len(class_names)
        return _State(
            layout.layout,
            records,
            cache,
            cache_root,
            split_file,
            split,
            assignment_digest(split),
            bad,
            report if bad else None,
            summary,
            class_names,
            class_map,
        )

    # ------------------------------------------------------------------ the split in checkpoints
    def state_dict(self) -> dict[str, str]:
        """Saved in every checkpoint as ``ckpt["LesionDataModule"]``: the split it was trained on."""
        state = self._ensure()
        return {"split_digest": state.split_digest, "split_file": str(state.split_file)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resuming from a checkpoint: keep its split, or refuse when the data moved since."""
        pin = pinned_split(state_dict)
        if not pin or (self._state is not None and self._state.split_digest == pin["split_digest"]):
            return
        self.hparams.split_file, self.hparams.split_digest = pin["split_file"], pin["split_digest"]
        self._state = self._prepare()

    def _ensure(self) -> _State:
        if self._state is None:
            self._state = self._prepare()
        return self._state

    # ------------------------------------------------------------------ datasets and loaders
    def split_dataset(self, split: str, augment: bool = False) -> SplitDataset:
        """The ``train`` / ``val`` / ``test`` split as a Dataset (augmented only if ``augment``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        state = self._ensure()
        row_of = {rid: i for i, rid in enumerate(state.cache.ids)}
        rows, labels, ids = [], [], []
        for rid in state.split[split]:
            row = row_of[rid]
            label = state.class_map.get(state.records[row].diagnosis)
            if label is None:
                continue  # class not selected by data.classes
            rows.append(row)
            labels.append(label)
            ids.append(rid)
        aug = build_augment(self.hparams.augment) if augment else None
        return SplitDataset(
            state.cache.images_path,
            np.array(rows, dtype=np.int64),
            np.array(labels),
            ids,
            ImageTransform(aug, self.hparams.normalization),
        )

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.split_dataset(split, augment=train)
        hp = self.hparams
        return DataLoader(
            dataset,
            batch_size=hp.batch_size,
            shuffle=train,
            # a trailing batch of one breaks BatchNorm in training; the shuffle changes which images wait
            drop_last=train and len(dataset) > hp.batch_size,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def describe(self) -> dict[str, Any]:
        """Primitives for run manifests: where the data came from and how it was split and cached."""
        state = self._ensure()
        hp = self.hparams
        sizes = {s: len(self.split_dataset(s)) for s in SPLITS}
        return {
            "root": str(Path(hp.root).resolve()),
            "layout": state.layout,
            "image_size": hp.image_size,
            "resize": hp.resize,
            "normalization": hp.normalization,
            "cache_key": state.cache.key,
            "cache_dir": str(state.cache.directory),
            "split_file": str(state.split_file),
            "split_digest": state.split_digest,
            "split_seed": hp.split_seed,
            "val_fraction": hp.val_fraction,
            "test_fraction": hp.test_fraction,
            "split_sizes": sizes,
            "class_names": list(state.class_names),
            "num_classes": len(state.class_names),
            "classes": hp.classes,
            "on_bad_image": hp.on_bad_image,
            "num_bad_inputs": len(state.bad),
            "bad_images_report": str(state.report) if state.report else None,
            "duplicates": state.duplicates,
            "synthetic": hp.synthetic,
        }
