"""Downstream utility: the arms' plan, the paired bootstrap, a label-shuffled prior scoring chance
while a correct one does not, and the stage's CLI on the shared chain (classifier reusable, report)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from budgethelpers import SMALL_CNN, TRAINER
from clihelpers import run_cli
from PIL import Image

from lesion_lightning.data.datamodule import LesionDataModule
from lesion_lightning.data.generated import GeneratedImages, read_labelled_samples
from lesion_lightning.data.synthetic import render_lesion
from lesion_lightning.data.transforms import ImageTransform
from lesion_lightning.downstream.plan import added_per_class, only_per_class
from lesion_lightning.metrics.utility import Task, compare_arms, score
from lesion_lightning.modules.checkpoints import load_classifier
from lesion_lightning.modules.classifier_module import predict_proba
from lesion_lightning.modules.classifier_training import train_classifier


def test_plan_tops_classes_up_to_the_largest_and_matches_real_counts() -> None:
    full, subset = {"nevus": 80, "melanoma": 20}, {"nevus": 8, "melanoma": 2}
    assert added_per_class(full, full, "auto") == {"nevus": 0, "melanoma": 60}
    assert added_per_class(full, subset, "auto") == {"nevus": 72, "melanoma": 78}
    assert added_per_class(full, subset, "full") == {"nevus": 72, "melanoma": 18}
    assert added_per_class(full, subset, 5) == {"nevus": 5, "melanoma": 5}
    assert only_per_class(full, "match") == full and only_per_class(full, 7) == {"nevus": 7, "melanoma": 7}
    with pytest.raises(ValueError, match="synthetic_per_class"):
        added_per_class(full, full, "lots")
    with pytest.raises(ValueError, match="synthetic_only_per_class"):
        only_per_class(full, 0)


def test_paired_bootstrap_pairs_test_images() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    task = Task(("nevus", "melanoma"))
    assert task.metrics == ("macro_auroc", "melanoma_auroc", "balanced_accuracy")

    def two_class(p: torch.Tensor) -> torch.Tensor:
        return torch.stack([1 - p, p], 1)

    informative = [two_class(labels.float() * 0.6 + 0.4 * torch.rand(200, generator=g)) for _ in range(2)]
    noise = [two_class(torch.rand(200, generator=g)) for _ in range(2)]
    res = compare_arms({"real": informative, "same": informative, "noise": noise}, labels, task, "real", 200)
    # an arm identical to the reference differs by exactly 0 on every resample: the pairing works
    assert res["differences"]["same - real"]["macro_auroc"]["mean_ci"] == [0.0, 0.0]
    lo, hi = res["differences"]["noise - real"]["macro_auroc"]["mean_ci"]
    assert hi < 0 and res["arms"]["real"]["mean_ci"]["macro_auroc"][0] > 0.9
    assert abs(res["arms"]["noise"]["mean"]["melanoma_auroc"] - 0.5) < 0.15
    # AUC needs both classes in the test labels: undefined, not a number
    assert score(informative[0][:10], torch.zeros(10, dtype=torch.long), task)["macro_auroc"] is None


def _write_samples(folder: Path, labels: list[str], images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    files = []
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"sample_{i:04d}.png")
        files.append(f"sample_{i:04d}.png")
    (folder / "samples.json").write_text(json.dumps({"files": files, "labels": labels}))
    return folder


def test_label_shuffled_prior_scores_chance_while_a_correct_one_does_not(tmp_path: Path) -> None:
    """Arm (3), train on generated and test on real, must see a broken prior. The "prior" is the
    synthetic-lesion generator, whose classes are visibly different: correctly labelled renders, and the
    same renders with labels shuffled so that each true class gets half of each label (zero information)."""
    size = 32
    dm = LesionDataModule(
        root=str(tmp_path / "real"),
        image_size=size,
        layout="isic_archive",
        test_fraction=0.5,
        synthetic={"num_images": 160, "image_size": size, "seed": 0},
    )
    dm.prepare_data()
    test = dm.split_dataset("test")
    test_labels = torch.as_tensor(test.labels)
    names = list(dm.class_names)
    task = Task(tuple(names))
    assert len(test) >= 60 and set(test_labels.tolist()) == {0, 1}

    rng = np.random.default_rng(7)
    true = [names[i % 2] for i in range(96)]
    images = [render_lesion(size, c, rng) for c in true]

    def shuffled(seed: int) -> list[str]:
        """Half of each true class relabelled as the other: the label says nothing about the image."""
        out, r = list(true), np.random.default_rng(seed)
        for c in names:
            idx = [i for i, t in enumerate(true) if t == c]
            other = next(n for n in names if n != c)
            for i in r.permutation(idx)[: len(idx) // 2]:
                out[i] = other
        return out

    test_images = torch.stack([test[i]["image"] for i in range(len(test))])
    aucs = {}
    for kind in ("correct", "shuffled"):
        probs = []
        # a broken prior labels at random: every seed draws its own shuffle (a single shuffle's classifier
        # can land on a class-correlated image feature by chance, in either direction)
        for seed in (0, 1, 2):
            labels = true if kind == "correct" else shuffled(seed)
            samples = read_labelled_samples(_write_samples(tmp_path / f"{kind}{seed}", labels, images))
            dataset = GeneratedImages(
                samples.files,
                [names.index(x) for x in samples.labels],
                ImageTransform(None, "minmax"),
                image_size=size,
            )
            model, _ = train_classifier(dataset, SMALL_CNN, names, "minmax", size, 60, 32, seed, 0, TRAINER)
            probs.append(predict_proba(model, test_images))
        aucs[kind] = compare_arms({"synthetic_only": probs}, test_labels, task, "synthetic_only", 200)
    correct = aucs["correct"]["arms"]["synthetic_only"]
    broken = aucs["shuffled"]["arms"]["synthetic_only"]
    # documented tolerance (README): chance is 0.5 +- 0.15 for the seed-mean over 3 seeds, ~80 test images
    assert abs(broken["mean"]["macro_auroc"] - 0.5) < 0.15, broken
    assert correct["mean"]["macro_auroc"] > 0.85, correct
    assert correct["mean_ci"]["macro_auroc"][0] > broken["mean_ci"]["macro_auroc"][1]


@pytest.mark.slow
def test_utility_cli_on_the_chain(chain, tmp_path: Path) -> None:
    run = tmp_path / "run"
    external = tmp_path / "external"  # another synthetic-lesion folder, 48 px: resized to the data's 32
    LesionDataModule(
        root=str(external), image_size=48, synthetic={"num_images": 12, "image_size": 48, "seed": 9}
    ).prepare_data()
    args = [
        f"vqvae_ckpt={chain['vqvae']}",
        f"pixelcnn_ckpt={chain['pixelcnn']}",
        f"samples_dir={chain['samples']}",
        f"out_dir={run / 'utility'}",
        "model=small_cnn",
        "model.net.width=4",
        "steps=3",
        "batch_size=8",
        "seeds=2",
        "bootstrap.num_resamples=20",
        "synthetic_per_class=3",
        "real_fractions=[0.5,1.0]",
        f"external_test={external}",
        "logger=csv",
        "hydra.run.dir=utility_run",
    ]
    proc = run_cli("lesion_lightning.utility", *args, cwd=tmp_path)
    assert "Downstream utility" in proc.stdout and "(2) − (1b)" in proc.stdout
    assert "Data-budget curve" in proc.stdout and "on the (1b) curve" in proc.stdout
    out = run / "utility"
    res = json.loads((out / "metrics.json").read_text())
    assert list(res["arms"]) == ["real", "real_balanced", "real_plus_synthetic", "synthetic_only"]
    curve = res["curve"]
    assert curve["fractions"] == [0.5, 1.0] and set(curve["tests"]) == {"test", "external"}
    assert curve["n_real"][0] < curve["n_real"][1] == res["arms"]["real"]["train_size"]["real"]
    ext = res["external_test"]
    assert ext["n"] + sum(ext["dropped"].values()) == 12 and curve["tests"]["external"]["n"] == ext["n"]
    for section in curve["tests"].values():
        assert {
            f"{a}@{f:g}" for a in ("real", "real_balanced", "real_plus_synthetic") for f in (0.5, 1.0)
        } < set(section["points"])
        assert [r["fraction"] for r in section["equivalent_real"]] == [0.5, 1.0, None]
    # flat curve keys for the loggers (the chain's tiny test split holds one class: AUROC undefined there,
    # so it is left out rather than logged; the external folder has both classes)
    assert "utility/curve/test/real_balanced@0.5/balanced_accuracy" in res["metrics"]
    assert "utility/curve/test/real_balanced@0.5/macro_auroc" not in res["metrics"]
    assert "utility/curve/external/real_balanced@0.5/macro_auroc" in res["metrics"]
    assert res["seeds"] == [0, 1] and sorted(res["task"]["class_names"]) == ["melanoma", "nevus"]
    assert res["arms"]["real_plus_synthetic"]["train_size"]["synthetic"] == 6
    assert len(res["arms"]["real"]["per_seed"]) == 2
    # the chain's 6 mixed samples are used first, the rest is generated per class, labels recorded
    generated = read_labelled_samples(out / "generated" / "melanoma")
    assert set(generated.labels) == {"melanoma"}
    assert set(res["fidelity"]) == {"nevus", "melanoma"}
    assert (out / "utility.png").is_file() and (out / "table.md").is_file()

    # the arm-(1) classifier is reusable
    clf = load_classifier(out / "classifiers" / "real_seed0.ckpt")
    images = torch.rand(3, 3, 32, 32)
    probs = predict_proba(clf, images)
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(1), torch.ones(3))
    with pytest.raises(ValueError, match="32x32"):
        predict_proba(clf, torch.rand(1, 3, 16, 16))

    # a second run finds every (arm, seed) cached and retrains nothing
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.pt")}
    proc = run_cli("lesion_lightning.utility", *args, cwd=tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.pt")} == before
    assert (
        json.loads((out / "metrics.json").read_text())["arms"]["real"]["per_seed"]
        == res["arms"]["real"]["per_seed"]
    )

    # the sweep report shows the table and the bar plot
    from lesion_lightning.report.publish import write_report
    from lesion_lightning.utils.run_folder import PipelineRecord, StageRecord

    PipelineRecord(grid=8, stages={"utility": StageRecord(status="done", seconds=1.0)}).save(
        run / "pipeline.json"
    )

    report = write_report(tmp_path).read_text()
    assert "Downstream utility" in report and "(3) synthetic only" in report
    assert (tmp_path / "utility.png").is_file()


@pytest.mark.parametrize("num_classes", [2, 4])
def test_batched_bootstrap_scores_equal_torchmetrics(num_classes: int) -> None:
    from lesion_lightning.metrics.utility import batched_scores

    g = torch.Generator().manual_seed(num_classes)
    labels = torch.arange(60) % num_classes
    # coarse probabilities: many ties, the hard case for a rank-based AUC
    probs = (torch.rand(60, num_classes, generator=g) * 4).round().softmax(1)
    task = Task(("nevus", "melanoma", "bcc", "vascular")[:num_classes])
    idx = torch.stack([torch.randint(0, 60, (60,), generator=g) for _ in range(5)])
    idx[:, :num_classes] = torch.arange(num_classes)  # every class present in every resample
    batched = batched_scores(probs, labels, idx, task)
    for b in range(5):
        expected = score(probs[idx[b]], labels[idx[b]], task)
        for m in task.metrics:
            assert batched[m][b].item() == pytest.approx(expected[m], abs=1e-6), (m, b)


def test_imagenet_weights_load_from_a_local_file_only(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    from lesion_lightning.models.classifier import build_classifier, load_imagenet_weights

    imagenet = resnet18(weights=None, num_classes=1000)
    torch.save(imagenet.state_dict(), tmp_path / "resnet18.pth")
    net = build_classifier("resnet18", 3)
    load_imagenet_weights(net, tmp_path / "resnet18.pth")
    assert torch.equal(net.resnet.conv1.weight, imagenet.conv1.weight)
    assert net.resnet.fc.out_features == 3  # the head stays ours
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not hold torchvision ResNet-18 weights"):
        load_imagenet_weights(net, tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="pretrained_weights"):
        load_imagenet_weights(net, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="only supported for model=resnet18"):
        load_imagenet_weights(build_classifier("small_cnn", 2), tmp_path / "resnet18.pth")
