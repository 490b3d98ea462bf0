"""One diagnosis vocabulary for every ISIC layout, and ``data.classes`` (select / merge classes).

Every layout's labels (HAM10000 ``dx`` codes, the one-hot challenge columns, the ISIC 2020 and
legacy archive ``diagnosis`` strings, the archive's hierarchical ``diagnosis_1``..``diagnosis_5``)
are mapped onto ``VOCABULARY``:

==================  ===============================================================================
``melanoma``        MEL; "melanoma", "Melanoma Invasive", "Melanoma in situ", "Melanoma, NOS",
                    "melanoma metastasis"; diagnosis_2 "Malignant melanocytic proliferations (Melanoma)"
``nevus``           NV; "nevus", "Nevus", "lentigo simplex", "blue nevus"...;
                    diagnosis_2 "Benign melanocytic proliferations"
``bcc``             BCC; "basal cell carcinoma"; diagnosis_2 "Malignant adnexal epithelial
                    proliferations - Follicular"
``actinic_keratosis``  AKIEC (2018: actinic keratosis + Bowen's disease), AK (2019); "actinic keratosis",
                    "Solar or actinic keratosis"; diagnosis_2 "Indeterminate epidermal proliferations"
``benign_keratosis``   BKL; "seborrheic keratosis", "solar lentigo", "lentigo NOS", "lichenoid keratosis",
                    "pigmented benign keratosis", "clear cell acanthoma"; diagnosis_2 "Benign epidermal
                    proliferations"
``dermatofibroma``  DF; "dermatofibroma"; diagnosis_2 "Benign soft tissue proliferations - Fibro-histiocytic"
``vascular``        VASC; "vascular lesion", "angioma", "hemangioma", "angiokeratoma", "pyogenic granuloma";
                    diagnosis_2 "Benign soft tissue proliferations - Vascular"
``scc``             SCC (2019); "squamous cell carcinoma", "Squamous cell carcinoma in situ / Invasive / NOS";
                    diagnosis_2 "Malignant epidermal proliferations"
``unknown``         UNK; "unknown", "other", an empty diagnosis (unlabelled archive images, plain folders),
                    and real ISIC diagnoses outside the eight classes (acrochordon, verruca, scar,
                    cafe-au-lait macule, atypical melanocytic proliferation, ...; any hierarchical
                    diagnosis whose ``diagnosis_1`` is Benign / Malignant / Indeterminate but whose
                    finer levels name none of the classes above)
==================  ===============================================================================

A string that is none of these (a typo, another dataset's code) is *not* silently turned into
``unknown``: :func:`map_flat` / :func:`map_hierarchical` return ``None`` and the layout reader
reports it as bad input, naming the file, the row and the string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

VOCABULARY: tuple[str, ...] = (
    "melanoma",
    "nevus",
    "bcc",
    "actinic_keratosis",
    "benign_keratosis",
    "dermatofibroma",
    "vascular",
    "scc",
    "unknown",
)

# Short codes used by the challenges (HAM10000 dx, 2018/2019 one-hot columns), also accepted in data.classes.
CODES: dict[str, str] = {
    "mel": "melanoma",
    "nv": "nevus",
    "bcc": "bcc",
    "akiec": "actinic_keratosis",
    "ak": "actinic_keratosis",
    "bkl": "benign_keratosis",
    "df": "dermatofibroma",
    "vasc": "vascular",
    "scc": "scc",
    "unk": "unknown",
}

# Flat diagnosis strings (legacy archive `diagnosis`, ISIC 2020 `diagnosis`) and the specific levels
# (diagnosis_3..5) of the hierarchical archive metadata, compared lower-cased with collapsed spaces.
_SPECIFIC: dict[str, str] = {
    **CODES,
    # melanoma
    "melanoma": "melanoma",
    "melanoma invasive": "melanoma",
    "melanoma in situ": "melanoma",
    "melanoma, nos": "melanoma",
    "melanoma metastasis": "melanoma",
    # nevus (benign melanocytic proliferations)
    "nevus": "nevus",
    "melanocytic nevus": "nevus",
    "melanocytic nevi": "nevus",
    "blue nevus": "nevus",
    "lentigo simplex": "nevus",
    # basal cell carcinoma
    "basal cell carcinoma": "bcc",
    # actinic keratosis (HAM10000's akiec also holds Bowen's disease / SCC in situ)
    "actinic keratosis": "actinic_keratosis",
    "solar or actinic keratosis": "actinic_keratosis",
    "actinic keratoses": "actinic_keratosis",
    "actinic keratoses and intraepithelial carcinoma": "actinic_keratosis",
    # benign keratosis-like lesions (HAM10000 bkl)
    "seborrheic keratosis": "benign_keratosis",
    "pigmented benign keratosis": "benign_keratosis",
    "benign keratosis": "benign_keratosis",
    "benign keratosis-like lesions": "benign_keratosis",
    "solar lentigo": "benign_keratosis",
    "lentigo nos": "benign_keratosis",
    "lichenoid keratosis": "benign_keratosis",
    "lichen planus like keratosis": "benign_keratosis",
    "clear cell acanthoma": "benign_keratosis",
    # dermatofibroma
    "dermatofibroma": "dermatofibroma",
    # vascular
    "vascular lesion": "vascular",
    "vascular lesions": "vascular",
    "angioma": "vascular",
    "hemangioma": "vascular",
    "angiokeratoma": "vascular",
    "pyogenic granuloma": "vascular",
    # squamous cell carcinoma
    "squamous cell carcinoma": "scc",
    "squamous cell carcinoma in situ": "scc",
    "squamous cell carcinoma, invasive": "scc",
    "squamous cell carcinoma, nos": "scc",
    # known ISIC diagnoses outside the eight classes, and explicit "no diagnosis"
    "unknown": "unknown",
    "other": "unknown",
    "acrochordon": "unknown",
    "verruca": "unknown",
    "scar": "unknown",
    "neurofibroma": "unknown",
    "aimp": "unknown",
    "atypical melanocytic proliferation": "unknown",
    "atypical melanocytic neoplasm": "unknown",
    "cafe-au-lait macule": "unknown",
    "angiofibroma or fibrous papule": "unknown",
    "adnexal tumor": "unknown",
    "nevus spilus": "nevus",
}

# diagnosis_2 (the archive's mid level): categories that pin a class when the finer levels don't.
_CATEGORY: dict[str, str] = {
    "malignant melanocytic proliferations (melanoma)": "melanoma",
    "benign melanocytic proliferations": "nevus",
    "malignant adnexal epithelial proliferations - follicular": "bcc",
    "indeterminate epidermal proliferations": "actinic_keratosis",
    "benign epidermal proliferations": "benign_keratosis",
    "benign soft tissue proliferations - fibro-histiocytic": "dermatofibroma",
    "benign soft tissue proliferations - vascular": "vascular",
    "malignant epidermal proliferations": "scc",
    "indeterminate melanocytic proliferations": "unknown",
}
_TOP_LEVELS = {"benign", "malignant", "indeterminate"}

REST = "*"  # in a data.classes mapping: every vocabulary class not named elsewhere


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def map_flat(label: str) -> str | None:
    """Vocabulary class of a flat diagnosis string or code; ``""`` -> ``unknown``; unrecognised -> None."""
    key = _norm(label)
    if key in ("", "nan", "none"):
        return "unknown"
    return _SPECIFIC.get(key)


def map_hierarchical(levels: Sequence[str]) -> str | None:
    """Vocabulary class of ``[diagnosis_1, ..., diagnosis_5]`` (missing levels as ``""``).

    The most specific recognised level wins (diagnosis_5 -> diagnosis_3 through the specific table,
    then diagnosis_2 through the category table), so subtypes such as "Nevus, Atypical, Dysplastic, or
    Clark" fall back to their parent "Nevus". All levels empty -> ``unknown`` (unlabelled image).
    """
    levels = [_norm(v) for v in levels]
    if not any(levels):
        return "unknown"
    for value in reversed(levels[2:]):
        if value and value in _SPECIFIC:
            return _SPECIFIC[value]
    if len(levels) > 1 and levels[1]:
        if levels[1] in _CATEGORY:
            return _CATEGORY[levels[1]]
    # A real ISIC diagnosis (top level Benign/Malignant/Indeterminate) outside our classes.
    if levels[0] in _TOP_LEVELS:
        return "unknown"
    return None


def canonical_class(name: str, key: str = "data.classes") -> str:
    """``"MEL"`` / ``"Melanoma"`` / ``"melanoma"`` -> ``"melanoma"``; anything else -> ValueError naming ``key``."""
    norm = _norm(str(name)).replace(" ", "_")
    if norm in VOCABULARY:
        return norm
    if norm in CODES:
        return CODES[norm]
    raise ValueError(
        f"{key}: unknown class {name!r}; the vocabulary is {list(VOCABULARY)} "
        f"(codes {sorted(c.upper() for c in CODES)} are accepted too)"
    )


def resolve_classes(
    classes: Sequence[str] | Mapping[str, str | Sequence[str]] | None, present: Iterable[str]
) -> tuple[list[str], dict[str, int]]:
    """Turn ``data.classes`` into ``(class_names, {vocabulary class: label index})``.

    * ``None``: every vocabulary class present in the data, in vocabulary order.
    * a list, e.g. ``[melanoma]`` or ``[melanoma, nevus]``: keep only those classes, labels in list order.
    * a mapping ``{new name: [vocabulary classes]}`` merges classes; the value ``"*"`` means "every
      class not named elsewhere", e.g. melanoma vs rest: ``{melanoma: [melanoma], other: "*"}``.

    Vocabulary classes left out of the result are dropped from every split (on purpose, by config).
    """
    present = set(present)
    if classes is None:
        names = [c for c in VOCABULARY if c in present]
        return names, {c: i for i, c in enumerate(names)}
    if isinstance(classes, str):
        classes = [classes]
    if isinstance(classes, Mapping):
        names = [str(k) for k in classes]
        mapping: dict[str, int] = {}
        rest_index = None
        for i, (name, members) in enumerate(classes.items()):
            if isinstance(members, str):
                members = [members]
            for member in members:
                if member == REST:
                    if rest_index is not None:
                        raise ValueError(f"data.classes: {REST!r} may appear only once (in {name!r})")
                    rest_index = i
                    continue
                cls = canonical_class(member)
                if cls in mapping:
                    raise ValueError(
                        f"data.classes: {cls!r} is in two merged classes ({names[mapping[cls]]!r}, {name!r})"
                    )
                mapping[cls] = i
        if rest_index is not None:
            for cls in VOCABULARY:
                mapping.setdefault(cls, rest_index)
        return names, mapping
    names = [canonical_class(c) for c in classes]
    if len(set(names)) != len(names):
        raise ValueError(f"data.classes lists a class twice: {list(classes)}")
    if not names:
        raise ValueError("data.classes is empty; use null for all classes")
    return names, {c: i for i, c in enumerate(names)}
