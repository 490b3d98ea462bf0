"""Lesion classifiers for the downstream-utility stage: plain nn.Modules, free of Lightning.

Both take a float image batch ``(B, 3, S, S)`` normalised like the training data (``data.normalization``,
values in [0, 1]) and return class logits ``(B, C)``.

* ``resnet18``: torchvision's ResNet-18 with a ``C``-way head. Never downloads weights: ImageNet weights
  come from a local file (:func:`load_imagenet_weights`, torchvision's ``resnet18-f37072fd.pth``). The
  ImageNet mean/std standardisation is part of the network, so the pretrained filters see the input
  statistics they were trained on (harmless when training from scratch).
* ``small_cnn``: four conv-BN-ReLU-pool blocks and a linear head; trains in seconds on a CPU at 32-64 px.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

ARCHITECTURES = ("resnet18", "small_cnn")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNet18Classifier(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.resnet = resnet18(weights=None, num_classes=num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.resnet((x - self.mean) / self.std)


class SmallCNN(nn.Module):
    """(B, 3, S, S) -> (B, C): channels ``width, 2w, 4w, 4w``, each block halving the side."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 3
        for channels in (width, 2 * width, 4 * width, 4 * width):
            layers += [
                nn.Conv2d(prev, channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            prev = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))  # global average pool: any image size >= 16


def build_classifier(name: str, num_classes: int, **kwargs) -> nn.Module:
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got num_classes={num_classes}")
    if name == "resnet18":
        if kwargs:
            raise ValueError(f"model.net: resnet18 takes no options besides `name`, got {sorted(kwargs)}")
        return ResNet18Classifier(num_classes)
    if name == "small_cnn":
        return SmallCNN(num_classes, **kwargs)
    raise ValueError(f"model.net.name={name!r} is not one of {list(ARCHITECTURES)}")


def load_imagenet_weights(net: nn.Module, path: str | Path) -> None:
    """Load torchvision's ImageNet ResNet-18 state dict from a local file into ``net`` (all but the head).

    The file is torchvision's ``resnet18-f37072fd.pth`` (``ResNet18_Weights.IMAGENET1K_V1``), fetched
    once wherever there is network access; this function never downloads.
    """
    if not isinstance(net, ResNet18Classifier):
        raise ValueError(
            f"pretrained_weights is only supported for model=resnet18, not {type(net).__name__}; "
            "drop pretrained_weights or use model=resnet18"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained_weights={path}: no such file. Pass torchvision's ImageNet ResNet-18 weights "
            "(resnet18-f37072fd.pth, e.g. from ~/.cache/torch/hub/checkpoints/ on a machine with network "
            "access), or pretrained_weights=null to train from scratch"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"pretrained_weights={path} is not a readable torch state dict ({err})") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    # the ImageNet head has 1000 classes; ours is trained from scratch
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = net.resnet.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(
            f"pretrained_weights={path} does not hold torchvision ResNet-18 weights ({str(err)[:300]})"
        ) from err
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"pretrained_weights={path} does not hold torchvision ResNet-18 weights "
            f"(missing {missing[:5]}, unexpected {list(unexpected)[:5]})"
        )
