"""Which feature extractor a set metric came from, in its name: one helper for every writer.

FID / KID / precision / recall on the TF Inception keep their plain names (`test/fid`); on any other
extractor the name carries the extractor (`test/fid_RandomConvFeatures16`, `fid_RandomConvFeatures16_ci_low`),
so a stand-in number can never be read, plotted or copied as an FID. evaluate's flat metrics (CSV,
TensorBoard, W&B), the sweep report's cells and `bench guidance` all name their columns through
`metric_key(key, section)` with the generation section (or any dict holding `feature_extractor` and,
optionally, `num_features`).
"""

from __future__ import annotations

from lesion_lightning.metrics.inception import INCEPTION_NAME

# the set metrics whose value depends on the feature space (their `_ci`, `_ci_low`, ... variants too)
EXTRACTOR_METRICS = ("fid", "fid_inf", "kid", "kid_mean", "kid_std", "precision", "recall")
_SUFFIXES = ("_ci_low", "_ci_high", "_ci", "_se")


def is_inception(extractor: str | None) -> bool:
    """Whether `extractor` (a section's `feature_extractor`) is the TF FID Inception."""
    return bool(extractor) and str(extractor).startswith(INCEPTION_NAME)


def extractor_tag(section: dict) -> str:
    """'' for Inception features, else the extractor's short name (`RandomConvFeatures16`)."""
    extractor = section.get("feature_extractor")
    if is_inception(extractor):
        return ""
    if not extractor:
        return "unknown_features"
    short = str(extractor).rsplit(".", 1)[-1].replace("/", "")
    dims = section.get("num_features")
    return short if dims is None or short.endswith(str(dims)) else f"{short}{dims}"


def metric_key(key: str, section: dict) -> str:
    """`fid` -> `fid_RandomConvFeatures16` (and `fid_ci_low` -> `fid_RandomConvFeatures16_ci_low`)
    unless the section's features are Inception's; keys that do not depend on the extractor unchanged."""
    tag = extractor_tag(section)
    if not tag:
        return key
    for suffix in ("", *_SUFFIXES):
        base = key[: len(key) - len(suffix)] if suffix else key
        if (not suffix or key.endswith(suffix)) and base in EXTRACTOR_METRICS:
            return f"{base}_{tag}{suffix}"
    return key
