"""An external test set for the utility stage (``external_test=DIR``): any folder the data loaders
read (an ISIC download, a synthetic-lesion folder), preprocessed like the real data (same image size,
resize mode and normalisation), every image of it a test image (no split), labels mapped through the
vocabulary to the task's classes; images of classes outside the task are dropped and counted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from lesion_lightning.data.datamodule import LesionDataModule
from lesion_lightning.downstream.curve import Labelled


def external_test_set(
    root: str | Path, hparams, class_names: list[str], cache_dir: Path
) -> tuple[Labelled, dict]:
    """(dataset with task-indexed ``labels``, {root, n, class_counts, dropped}); a clear error when
    the folder holds no image of the task's classes."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"external_test={root} is not a folder; pass a folder of labelled lesion images"
        )
    dm = LesionDataModule(
        root=str(root),
        layout="auto",
        image_size=int(hparams.image_size),
        resize=str(hparams.resize),
        normalization=str(hparams.normalization),
        val_fraction=0.0,
        test_fraction=0.0,  # every image is a test image here: the split is moot
        cache_dir=str(cache_dir),
    )
    dm.prepare_data()
    dm.setup("test")
    every = dm.split_dataset("train", augment=False)
    names = list(dm.class_names)
    task_index = {c: i for i, c in enumerate(class_names)}
    keep, labels, dropped = [], [], Counter()
    for i, label in enumerate(every.labels):
        name = names[int(label)]
        if name in task_index:
            keep.append(i)
            labels.append(task_index[name])
        else:
            dropped[name] += 1
    if not keep:
        raise ValueError(
            f"external_test={root} holds no image of the task's classes {class_names} "
            f"(it has {dict(dropped)}); pass a folder with lesions of those classes"
        )
    data = Labelled(every, keep)
    # task-indexed labels for scoring (the items' own "label" keys index the folder's classes; the
    # stage only takes images from them)
    data.labels = np.asarray(labels, dtype=np.int64)
    counts = Counter(class_names[k] for k in labels)
    info = {
        "root": str(root.resolve()),
        "layout": dm.describe().get("layout"),
        "n": len(keep),
        "class_counts": {c: counts.get(c, 0) for c in class_names},
        "dropped": dict(dropped),
    }
    return data, info
