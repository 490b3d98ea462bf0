"""LPIPS (Zhang et al. 2018) as a training loss, its backbone weights read from a local file only.

torchmetrics ships the LPIPS linear heads (`functional/image/lpips_models/<net>.pth`) but fetches the
ImageNet backbone from torchvision's download server. A training run must never download, so the backbone
comes from `model.loss.lpips_weights=PATH`: a torchvision state dict of that backbone (e.g. the
`vgg16-397923af.pth` torchvision itself caches under ~/.cache/torch/hub/checkpoints/), copied onto the
LPIPS feature slices here. The network is frozen and kept in eval mode.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchmetrics.functional.image.lpips import _NoTrainLpips

# LPIPS backbone name -> torchvision constructor
BACKBONES = {"vgg": "vgg16", "alex": "alexnet", "squeeze": "squeezenet1_1"}


class LPIPSLoss(nn.Module):
    """Mean LPIPS distance between two image batches in [0, 1] (float32; gradients flow to the first)."""

    def __init__(self, weights: str | Path, net: str = "vgg") -> None:
        super().__init__()
        if net not in BACKBONES:
            raise ValueError(f"model.loss.lpips_net must be one of {sorted(BACKBONES)}, got {net!r}")
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"model.loss.lpips_weights={weights}: no such file; pass a torchvision {BACKBONES[net]} "
                "state dict (runs never download weights), or set model.loss.perceptual_weight=0"
            )
        # pnet_rand: build the backbone without fetching ImageNet weights; the linear heads load from
        # torchmetrics' own files
        self.lpips = _NoTrainLpips(net=net, pretrained=True, pnet_rand=True)
        backbone = getattr(torchvision.models, BACKBONES[net])(weights=None)
        try:
            backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as err:
            raise ValueError(
                f"model.loss.lpips_weights={weights} is not a torchvision {BACKBONES[net]} state dict "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            ) from err
        # the LPIPS slices partition a prefix of torchvision's `features`, in order: copy tensor by tensor
        source = list(backbone.features.state_dict().values())
        target = self.lpips.net.state_dict()
        if len(target) > len(source) or any(
            t.shape != s.shape for t, s in zip(target.values(), source, strict=False)
        ):
            raise ValueError(f"model.loss.lpips_weights={weights}: layers do not match LPIPS' {net} backbone")
        self.lpips.net.load_state_dict(dict(zip(target, source, strict=False)))
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, recon: Tensor, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.lpips(recon.float().clamp(0, 1), x.float(), normalize=True).mean()
