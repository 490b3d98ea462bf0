"""The data-budget curve's tests that can fail (issue 20), on tiny synthetic lesions and a small CNN:

* oracle generator: "synthetic" images that are real held-out train images are worth about as many
  real images as they add (the equivalent-real interval covers n_f + added);
* useless generator: label-shuffled renders (the broken prior of test_utility.py) are worth ~0 real
  images (the worth interval reaches 0 or below);
* confound caught: on an imbalanced split, exact duplicates of minority real images may raise balanced
  accuracy over plain real training, (2) - (1), but never over balanced real training, (2) - (1b).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from budgethelpers import SIZE, labels_of, make_fit, predict, toy_split
from PIL import Image

from lesion_lightning.data.budget import nested_subsets
from lesion_lightning.data.generated import GeneratedImages
from lesion_lightning.data.synthetic import render_lesion
from lesion_lightning.data.transforms import ImageTransform
from lesion_lightning.downstream.curve import (
    BALANCED,
    PLUS,
    REAL,
    BudgetSettings,
    Labelled,
    plan_points,
    run_curve,
    summarise_test,
    train_points,
)
from lesion_lightning.metrics.budget import covers
from lesion_lightning.metrics.utility import Task

# 240 lesions, 40 % test: ~60 real train images per class. The balanced-real curve climbs from macro
# AUROC ~0.73 at 6 images to ~0.94 at 16 and flattens above ~30 (measured, 60 steps, 3 seeds): the
# smallest fractions are where an added image can show its worth.
FRACTIONS = (0.05, 0.125, 0.25)
STEPS = 60
SEEDS = (0, 1, 2)
CONFOUND_SEEDS = (0, 1)


def _shuffled_renders(folder: Path, class_names: list[str], per_class: int, seed: int) -> GeneratedImages:
    """Renders of each class, half of each relabelled as the other: labels carry no information."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    true = [i % 2 for i in range(2 * per_class)]
    files, labels = [], []
    for i, t in enumerate(true):
        path = folder / f"sample_{i:04d}.png"
        Image.fromarray(render_lesion(SIZE, class_names[t], rng)).save(path)
        files.append(path)
        labels.append(t if (i // 2) % 2 == 0 else 1 - t)
    return GeneratedImages(files, labels, ImageTransform(None, "minmax"), image_size=SIZE)


@pytest.fixture(scope="module")
def curves(tmp_path_factory):
    """curves(kind): the (1b) curve and arm (2) at the smallest fraction for that generator, trained on
    first use (the (1b) runs are cached and shared by both generators)."""
    root = tmp_path_factory.mktemp("curve")
    dm = toy_split(root / "real", 240)
    train, test = dm.split_dataset("train"), dm.split_dataset("test")
    names = list(dm.class_names)
    fit = make_fit(names, STEPS)
    smallest = nested_subsets(train.labels, FRACTIONS)[FRACTIONS[0]]
    held_out = Labelled(train, np.setdiff1d(np.arange(len(train)), smallest))
    n_small = np.bincount(train.labels[smallest], minlength=2)
    n_next = np.bincount(train.labels[nested_subsets(train.labels, FRACTIONS)[FRACTIONS[1]]], minlength=2)
    # per class: arm (2) at the smallest fraction then has about as many images as the next budget
    add = int((n_next - n_small).min())
    common = {"fractions": FRACTIONS, "seeds": SEEDS, "num_resamples": 400, "synthetic_per_class": add}
    cache = root / "runs"  # the balanced curve is trained once and reused by the second generator
    task = Task(tuple(names))
    pools = {
        "oracle": lambda: [held_out],
        # a broken prior labels at random: every seed gets its own draw of renders and shuffle (one
        # fixed draw of 8 images can correlate with the classes by chance; resample_synthetic_per_seed)
        "useless": lambda: [_shuffled_renders(root / f"shuffled{k}", names, 60, seed=7 + k) for k in SEEDS],
    }
    done: dict = {"add": add}

    def curve(kind: str) -> dict:
        if kind not in done:
            settings = BudgetSettings(
                arms=(BALANCED, PLUS), resample_synthetic_per_seed=kind == "useless", **common
            )
            plans, info = plan_points(train, pools[kind](), names, settings)
            # the (1b) curve at every fraction; arm (2) only where it is read: the smallest fraction
            plans = [p for p in plans if p.arm == BALANCED or p.fraction == FRACTIONS[0]]
            probs, _ = train_points(plans, {"test": test}, settings, fit, predict, cache)
            done[kind] = summarise_test(probs["test"], labels_of(test), task, plans, info, settings)
        return done[kind]

    return curve


def _at(section: dict, arm: str, fraction: float) -> dict:
    rows = section["equivalent_real"]
    return next(r for r in rows if r["arm"] == arm and r["fraction"] == fraction)


@pytest.mark.slow
def test_oracle_generator_is_worth_the_real_images_it_adds(curves) -> None:
    curve = curves("oracle")
    f = FRACTIONS[0]
    eq = _at(curve, PLUS, f)["metrics"]["macro_auroc"]
    target = eq["n_real"] + eq["added"]
    print("oracle", json.dumps(eq))
    assert eq["added"] == 2 * curves("add")
    assert covers(eq["equivalent_real_ci"], target), json.dumps(eq)
    assert covers(eq["worth_ci"], eq["added"]), json.dumps(eq)
    # and not trivially: the interval excludes "worth nothing"
    assert not covers(eq["worth_ci"], 0.0), json.dumps(eq)


@pytest.mark.slow
def test_useless_generator_is_worth_about_nothing(curves) -> None:
    curve = curves("useless")
    f = FRACTIONS[0]
    eq = _at(curve, PLUS, f)["metrics"]["macro_auroc"]
    lo = eq["worth_ci"][0]
    print("useless", json.dumps(eq))
    assert lo == "below the curve" or lo <= 0, json.dumps(eq)


@pytest.mark.slow
def test_duplicated_minority_images_are_rebalancing_not_new_data(tmp_path: Path) -> None:
    """Nevus 50 : melanoma 6 real train images; the "generator" returns copies of the 6 melanomas until
    the classes are level (synthetic_per_class=auto). Where plain training under-calls melanoma, copies
    raise balanced accuracy ((2) - (1) > 0); balanced sampling of the same real images does the same,
    so (2) - (1b) must not be above 0. On this toy plain training already calls most melanomas (measured:
    (1b) - (1) = +0.022 [0.000, 0.054], (2) - (1) = 0.000 [-0.022, 0.022]), so only the must-part is asserted:
    copies never beat balanced sampling of the same real images."""
    dm = toy_split(tmp_path / "real", 240)
    train, test = dm.split_dataset("train"), dm.split_dataset("test")
    names = list(dm.class_names)
    mel = names.index("melanoma")
    rng = np.random.default_rng(0)
    minority = rng.permutation(np.flatnonzero(train.labels == mel))[:6]
    majority = np.flatnonzero(train.labels != mel)[:50]
    real = Labelled(train, np.sort(np.concatenate([minority, majority])))
    copies = Labelled(train, np.tile(minority, 10))  # 60 copies of the same 6 melanomas (44 used)
    settings = BudgetSettings(
        fractions=(1.0,),
        seeds=CONFOUND_SEEDS,
        arms=(REAL, BALANCED, PLUS),
        num_resamples=400,
        synthetic_per_class="auto",
    )
    curve, _, _ = run_curve(
        real, {"test": (test, labels_of(test))}, [copies], names, settings, make_fit(names, STEPS), predict
    )
    rows = {
        (r["arm"], r["reference"]): r["metrics"]["balanced_accuracy"]
        for r in curve["tests"]["test"]["differences"]
    }
    assert curve["tests"]["test"]["points"][f"{PLUS}@1"]["train_size"] == {"real": 56, "synthetic": 44}
    plus_real, plus_balanced = rows[(PLUS, REAL)], rows[(PLUS, BALANCED)]
    print("confound", json.dumps({"(2)-(1)": plus_real, "(2)-(1b)": plus_balanced}))
    # copies carry no new information: against the balanced real control they are worth nothing
    assert plus_balanced["mean_ci"][0] <= 0, rows
