"""metrics.naming: a stand-in extractor's numbers carry its name, Inception's keep the plain one."""

from __future__ import annotations

from lesion_lightning.metrics.distribution import reliability_label
from lesion_lightning.metrics.naming import extractor_tag, is_inception, metric_key

STAND_IN = {"feature_extractor": "lesion_lightning.metrics.generation.RandomConvFeatures", "num_features": 16}
INCEPTION = {"feature_extractor": "inception-v3-compat/2048", "num_features": 2048}


def test_stand_in_metrics_carry_the_extractor_in_every_variant():
    assert extractor_tag(STAND_IN) == "RandomConvFeatures16"
    assert metric_key("fid", STAND_IN) == "fid_RandomConvFeatures16"
    assert metric_key("fid_ci_low", STAND_IN) == "fid_RandomConvFeatures16_ci_low"
    assert metric_key("fid_inf_ci", STAND_IN) == "fid_inf_RandomConvFeatures16_ci"
    assert metric_key("kid_mean", STAND_IN) == "kid_mean_RandomConvFeatures16"
    assert metric_key("recall_ci_high", STAND_IN) == "recall_RandomConvFeatures16_ci_high"
    assert metric_key("n_generated", STAND_IN) == "n_generated"  # not a feature-space number
    assert metric_key("fid", {}) == "fid_unknown_features"  # unnamed features never pass as FID


def test_inception_metrics_keep_their_published_names():
    assert is_inception("inception-v3-compat/2048") and not is_inception("RandomConvFeatures16")
    for key in ("fid", "fid_ci_low", "kid", "precision_ci"):
        assert metric_key(key, INCEPTION) == key


def test_reliability_label_names_both_sides_and_the_extractor():
    assert reliability_label({**INCEPTION, "n_generated": 4096, "n_real": 397}) == (
        "n=4096 gen / 397 real, inception-v3-compat/2048; unreliable: < 2048 on one side"
    )
    assert "not Inception" in reliability_label({**STAND_IN, "n_generated": 5000, "n_real": 5000})
    assert "unreliable" not in reliability_label({**INCEPTION, "n_generated": 2048, "n_real": 2048})
