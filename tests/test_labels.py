"""Sample labels: the train split's class mix by default, exact counts, seeded order, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from lesion_lightning.utils.labels import allocate, sample_labels


def test_allocate_gives_counts_closest_to_n_times_p_in_a_seeded_order():
    labels = allocate(np.array([0.7, 0.2, 0.1]), 11, seed=0)
    assert np.bincount(labels, minlength=3).tolist() == [8, 2, 1]  # 7.7, 2.2, 1.1 -> largest remainder
    assert np.array_equal(labels, allocate(np.array([0.7, 0.2, 0.1]), 11, seed=0))
    assert not np.array_equal(labels, allocate(np.array([0.7, 0.2, 0.1]), 11, seed=1))
    assert labels.tolist() != sorted(labels.tolist())  # interleaved, not in blocks


def test_train_distribution_follows_the_train_split(tmp_path):
    np.save(tmp_path / "train_labels.npy", np.array([0] * 90 + [1] * 10))  # nevus-dominated
    labels, record = sample_labels("train", ["nevus", "melanoma"], 2, 50, seed=3, index_dir=tmp_path)
    assert np.bincount(labels).tolist() == [45, 5]
    assert record == {
        "label_distribution": "train",
        "class_probabilities": {"nevus": pytest.approx(0.9), "melanoma": pytest.approx(0.1)},
    }
    uniform, _ = sample_labels("uniform", ["nevus", "melanoma"], 2, 50, seed=3)
    assert np.bincount(uniform).tolist() == [25, 25]
    one, _ = sample_labels("melanoma", ["nevus", "melanoma"], 2, 4, seed=3)
    assert one.tolist() == [1, 1, 1, 1]


def test_bad_distribution_and_missing_train_labels_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="label_distribution='keratosis'.*uniform"):
        sample_labels("keratosis", ["nevus", "melanoma"], 2, 4, seed=0)
    with pytest.raises(FileNotFoundError, match="label_distribution=uniform"):
        sample_labels("train", ["nevus", "melanoma"], 2, 4, seed=0, index_dir=tmp_path)


def test_classes_resolve_names_and_indices_and_refuse_other_data() -> None:
    from lesion_lightning.utils.labels import Classes

    classes = Classes.of(["nevus", "melanoma"])
    assert classes.index("melanoma") == 1 and classes.index(0) == 0 and len(classes) == 2
    for bad in ("bcc", 2, -1, True):
        with pytest.raises(
            ValueError, match=r"label=.* is not one of this prior's classes \['nevus', 'melanoma'\]"
        ):
            classes.index(bad)
    classes.require_same(["nevus", "melanoma"])
    with pytest.raises(ValueError, match="trained on classes.*data has \\['melanoma', 'nevus'\\]"):
        classes.require_same(["melanoma", "nevus"])  # same names, other order: other indices
