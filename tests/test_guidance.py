"""Classifier-free guidance around the prior: condition dropout in training, guided sampling from the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from clihelpers import compose_config
from PIL import Image

from lesion_lightning.modules.pixelcnn_module import PixelCNNModule
from lesion_lightning.samples.folder import sample_to_folder as sample
from lesion_lightning.samples.folder import tile_captions

NET = {"num_codes": 8, "channels": 8, "num_layers": 2, "num_classes": 2, "grid_size": [4, 4]}


def test_condition_dropout_replaces_training_labels_only() -> None:
    module = PixelCNNModule(net=NET, cond_dropout=0.5)
    assert module.net.null_class and module.net.null_label == 2
    seen = []
    module.forward = lambda indices, labels=None: (
        seen.append(labels.clone()) or torch.zeros(indices.shape[0], 8, 4, 4, requires_grad=True)
    )
    module.log = lambda *a, **k: None
    batch = {"indices": torch.zeros(400, 4, 4, dtype=torch.long), "label": torch.arange(400) % 2}
    torch.manual_seed(0)
    module._shared_step(batch, "train")
    module._shared_step(batch, "val")
    train, val = seen
    dropped = train == 2
    assert 0.4 < dropped.float().mean() < 0.6  # about cond_dropout of them
    assert torch.equal(train[~dropped], batch["label"][~dropped])
    assert torch.equal(val, batch["label"])  # validation scores the real condition
    assert not PixelCNNModule(net=NET).net.null_class  # off by default: no extra embedding row
    with pytest.raises(ValueError, match="cond_dropout must be a number in"):
        PixelCNNModule(net=NET, cond_dropout=1.0)
    with pytest.raises(ValueError, match="model.cond_dropout=0"):
        PixelCNNModule(net={**NET, "num_classes": 0}, cond_dropout=0.1)


def test_tile_captions() -> None:
    assert tile_captions([None, None], 0.0) is None
    assert tile_captions(["melanoma", "nevus"], 0.0) == ["melanoma", "nevus"]
    assert tile_captions(["melanoma", None], 2.5) == ["melanoma w=2.5", "w=2.5"]


@pytest.mark.slow
def test_guided_sampling_cli_labels_its_grid(chain, tmp_path) -> None:
    overrides = [f"pixelcnn_ckpt={chain['pixelcnn']}", "num_samples=4", "seed=3"]
    out = {}
    for name, extra in (("plain", []), ("guided", ["guidance=3.0", "top_k=12", "top_p=0.95"])):
        cfg = compose_config("sample", [*overrides, *extra, f"out_dir={tmp_path / name}"], tmp_path)
        out[name] = sample(cfg)
    meta = json.loads((out["guided"] / "samples.json").read_text())
    # labels follow the train split's class mix (sample.label_distribution=train), one per sample
    assert meta["settings"]["guidance"] == 3.0 and len(meta["labels"]) == 4
    assert set(meta["labels"]) <= {"melanoma", "nevus"}
    plain = Image.open(out["plain"] / "grid.png")
    guided = Image.open(out["guided"] / "grid.png")
    assert plain.size == guided.size and plain.height > 32 + 4  # a caption band above the 32-px tiles
    same = [
        Image.open(out["plain"] / f"sample_{i:04d}.png").tobytes()
        == Image.open(out["guided"] / f"sample_{i:04d}.png").tobytes()
        for i in range(4)
    ]
    assert not all(same)  # guidance changed the draws of the same seed
