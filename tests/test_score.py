"""Likelihood scoring: per-image bits/dim equal the training loss on the same grids, the class-marginal and
baseline maps are exact, and `score` tells synthetic lesions from noise (AUROC), with clear errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clihelpers import compose_config
from PIL import Image

from lesion_lightning.data.indices import IndexDataset
from lesion_lightning.metrics.likelihood import (
    baseline_nll,
    bits_per_dim,
    class_marginal_nll,
    ood_metrics,
    position_nll,
)
from lesion_lightning.metrics.prior import marginal_bits_per_dim, model_bits_per_dim, position_log_probs
from lesion_lightning.models.pixelcnn import GatedPixelCNN
from lesion_lightning.modules.checkpoints import build_datamodule, load_pixelcnn
from lesion_lightning.score import score

K = 7


def model(num_classes: int = 0) -> GatedPixelCNN:
    torch.manual_seed(0)
    net = GatedPixelCNN(K, 8, 2, 3, num_classes).eval()
    for layer in net.layers if num_classes else []:
        torch.nn.init.normal_(layer.cond.weight)
    return net


def test_per_image_bits_average_to_the_training_loss() -> None:
    net = model(num_classes=2)
    grids = torch.randint(0, K, (5, 4, 6), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 1, 0, 1])
    per_image = bits_per_dim(position_nll(net, grids, labels))
    loss_bits = F.cross_entropy(net(grids, labels), grids) / math.log(2)  # PixelCNNModule's bits_per_dim
    torch.testing.assert_close(per_image.mean(), loss_bits)
    for i in range(5):  # and each image alone is its own one-grid loss
        alone = F.cross_entropy(net(grids[i : i + 1], labels[i : i + 1]), grids[i : i + 1]) / math.log(2)
        torch.testing.assert_close(per_image[i], alone)


def test_class_marginal_map_sums_to_the_mixture_likelihood() -> None:
    net = model(num_classes=3)
    grids = torch.randint(0, K, (4, 3, 5), generator=torch.Generator().manual_seed(2))
    per_class = torch.stack(
        [position_nll(net, grids, torch.full((4,), c)).sum(dim=(1, 2)) for c in range(3)]
    )  # (C, B) -log p(x | c)
    expected = -(torch.logsumexp(-per_class, dim=0) - math.log(3))  # -log mean_c p(x | c)
    nll = class_marginal_nll(net, grids)
    torch.testing.assert_close(nll.sum(dim=(1, 2)), expected, rtol=1e-5, atol=1e-4)
    # a per-position decomposition, not a rescaled total: the first position is the class average
    first = torch.stack([position_nll(net, grids, torch.full((4,), c))[:, 0, 0] for c in range(3)])
    torch.testing.assert_close(
        nll[:, 0, 0], -(torch.logsumexp(-first, 0) - math.log(3)), rtol=1e-5, atol=1e-5
    )
    assert (nll > 0).all()
    with pytest.raises(ValueError, match="class-conditional"):
        class_marginal_nll(model(), grids)


def test_baseline_map_matches_the_marginal_bits_per_dim() -> None:
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, K, (30, 3, 4)), rng.integers(0, K, (6, 3, 4))
    log_p = torch.from_numpy(position_log_probs(train, K)).float()
    per_image = bits_per_dim(baseline_nll(log_p, torch.from_numpy(test)))
    assert per_image.mean().item() == pytest.approx(marginal_bits_per_dim(train, test, K), rel=1e-6)
    with pytest.raises(ValueError, match="grids"):
        baseline_nll(log_p, torch.zeros(1, 4, 4, dtype=torch.long))


def test_ood_metrics() -> None:
    separated = ood_metrics(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.9]), num_bootstrap=50)
    assert separated["auroc"] == 1.0 and separated["aupr"] == 1.0 and separated["auroc_ci"] == [1.0, 1.0]
    reversed_ = ood_metrics(np.array([0.5, 0.9]), np.array([0.1, 0.2, 0.3]), num_bootstrap=0)
    assert reversed_["auroc"] == 0.0 and "auroc_ci" not in reversed_
    half = ood_metrics(np.array([0.1, 0.4]), np.array([0.2, 0.3]), num_bootstrap=0)
    assert half["auroc"] == 0.5 and half["roc"]["fpr"][0] == 0.0
    with pytest.raises(ValueError, match="both sides"):
        ood_metrics(np.array([]), np.array([1.0]))


# ------------------------------------------------------------------------------------- the CLI
def run_score(tmp_path: Path, name: str, *overrides: str) -> tuple[dict, Path]:
    out = tmp_path / name
    cfg = compose_config(
        "score",
        [*overrides, f"out_dir={out}", f"data.cache_dir={tmp_path / 'cache'}", "num_bootstrap=200"],
        tmp_path,
    )
    return score(cfg), out


def read_scores(path: Path) -> dict[str, dict]:
    with path.open() as f:
        return {row["file"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
def test_split_scores_equal_the_priors_test_bits_per_dim(chain, tmp_path) -> None:
    result, out = run_score(
        tmp_path, "split", f"pixelcnn_ckpt={chain['pixelcnn']}", "split=test", "num_pictures=2"
    )
    assert result["conditioning"] == "label"  # the split's own labels, as in training
    rows = read_scores(out / "scores.csv")
    # The index dataset holds the same images' grids, in split order: per image, the training loss.
    prior = load_pixelcnn(chain["pixelcnn"])
    grids = IndexDataset(chain["indices"], "test")
    ids = build_datamodule(chain["vqvae"]).split_dataset("test").ids
    assert len(rows) == len(ids) == len(grids) > 0
    for i, file in enumerate(ids):
        item = grids[i]
        logits = prior(item["indices"][None], item["label"][None])
        expected = F.cross_entropy(logits, item["indices"][None]).item() / math.log(2)
        assert float(rows[file]["bits_per_dim"]) == pytest.approx(expected, abs=1e-5)
    mean = result["images"]["bits_per_dim"]["mean"]
    assert mean == pytest.approx(model_bits_per_dim(prior, grids, 8, torch.device("cpu")), abs=1e-5)
    train = IndexDataset(chain["indices"], "train")
    baseline = marginal_bits_per_dim(train.indices, grids.indices, 16)
    assert result["images"]["baseline_bits_per_dim"]["mean"] == pytest.approx(baseline, abs=1e-5)
    ranks = [int(r["rank"]) for r in rows.values()]
    values = [float(r["bits_per_dim"]) for r in rows.values()]
    assert ranks == sorted(ranks) and values == sorted(values, reverse=True)  # most anomalous first
    assert (out / "highest.png").is_file() and (out / "lowest.png").is_file()
    assert json.loads((out / "score.json").read_text())["images"]["pictures"]["highest"][0] == next(
        iter(rows)
    )


def fine_tuned_prior(chain, path: Path, steps: int = 200) -> Path:
    """The chain's prior trained `steps` more full-batch steps on its train grids: one epoch leaves it near
    uniform, which tells nothing from anything. Saved as a checkpoint of the same kind and pairing."""
    torch.manual_seed(0)
    module = load_pixelcnn(chain["pixelcnn"]).train()
    train = IndexDataset(chain["indices"], "train")
    grids, labels = torch.from_numpy(train.indices.astype(np.int64)), torch.from_numpy(train.labels)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(module(grids, labels), grids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ckpt = torch.load(chain["pixelcnn"], map_location="cpu", weights_only=True)
    ckpt["state_dict"] = module.state_dict()
    torch.save(ckpt, path)
    return path


@pytest.mark.slow
def test_score_separates_synthetic_lesions_from_noise(chain, tmp_path) -> None:
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(noise / f"noise_{i:02d}.png")
    lesions = Path(build_datamodule(chain["vqvae"]).hparams.root)  # the synthetic ISIC-layout folder
    prior = fine_tuned_prior(chain, tmp_path / "prior.ckpt")
    result, out = run_score(
        tmp_path,
        "ood",
        f"pixelcnn_ckpt={prior}",
        f"vqvae_ckpt={chain['vqvae']}",
        f"images={lesions}",
        f"ood={noise}",
    )
    # the noise folder has no labels: both sides are scored alike, under the class mixture
    assert result["conditioning"] == "class_marginal"
    raw = result["ood_detection"]["raw bits/dim"]
    assert raw["auroc"] > 0.9, raw
    assert raw["num_in"] == 24 and raw["num_ood"] == 12 and raw["auroc_ci"][0] <= raw["auroc"]
    assert "corrected" in result["ood_detection"]
    assert (out / "roc.png").is_file() and len(read_scores(out / "ood_scores.csv")) == 12
    print(f"AUROC synthetic lesions vs noise: {json.dumps(result['ood_detection'], indent=1)}")


@pytest.mark.slow
def test_score_bad_inputs(chain, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    pix = f"pixelcnn_ckpt={chain['pixelcnn']}"
    with pytest.raises(FileNotFoundError, match=r"images=.*empty: .*holds no image"):
        run_score(tmp_path, "a", pix, f"images={empty}")
    with pytest.raises(FileNotFoundError, match="images=.*no such folder"):
        run_score(tmp_path, "b", pix, f"images={tmp_path / 'missing'}")
    with pytest.raises(FileNotFoundError, match="pixelcnn_ckpt=.*no such checkpoint"):
        run_score(tmp_path, "c", f"pixelcnn_ckpt={tmp_path / 'none.ckpt'}")
    other = next(chain["vqvae"].parent.glob("best-*.ckpt"))
    with pytest.raises(ValueError, match="mismatched checkpoints"):
        run_score(tmp_path, "d", pix, f"vqvae_ckpt={other}")
    with pytest.raises(ValueError, match="conditioning=label but"):
        run_score(tmp_path, "e", pix, f"images={chain['samples']}", "conditioning=label")
    assert not any((tmp_path / n).exists() for n in "abcde"), "nothing half-written"
