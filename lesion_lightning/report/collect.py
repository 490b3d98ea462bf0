"""Collect a sweep: every run folder's pipeline.json, metrics.json, samples.json and pictures -> one dict
per run (missing values None, each explained in the run's `notes`; collecting never fails on a partial
sweep). Paths and pipeline.json's keys come from `utils.run_folder`, their one owner."""

from __future__ import annotations

import json
import math
from pathlib import Path

from lesion_lightning.data.generated import SamplesFolder
from lesion_lightning.utils.run_folder import PIPELINE_JSON, STAGES, PipelineRecord, RunFolder, grid_side


def _read_json(path: Path, what: str, notes: list[str]) -> dict | None:
    if not path.is_file():
        notes.append(f"{what} missing ({path.name} not found)")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        notes.append(f"{what} unreadable ({path.name}: {err})")
        return None
    if not isinstance(data, dict):
        notes.append(f"{what} unreadable ({path.name} is not a JSON object)")
        return None
    return data


def number(section: dict | None, key: str) -> float | None:
    value = (section or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def interval(section: dict | None, key: str) -> tuple[float, float] | None:
    """`<key>_ci` = [low, high] (metrics.stats.Interval's key convention) as a pair, or None."""
    value = (section or {}).get(f"{key}_ci")
    if isinstance(value, list) and len(value) == 2 and all(number({"v": v}, "v") is not None for v in value):
        return (float(value[0]), float(value[1]))
    return None


def read_utility(folder: RunFolder) -> tuple[dict | None, str | None]:
    """A pipeline run's utility results, or (None, why not)."""
    path = folder.utility_metrics
    if not path.is_file():
        return None, "utility stage not run (no utility/metrics.json)"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return None, f"utility/metrics.json unreadable: {err}"
    if not isinstance(data, dict):
        return None, "utility/metrics.json is not a JSON object"
    if data.get("skipped"):
        return None, f"utility skipped: {data['skipped']}"
    return data, None


def _seconds_per_image(folder: RunFolder, notes: list[str]) -> float | None:
    try:
        return SamplesFolder.read(folder.samples_dir, "sample stage").seconds_per_image
    except (OSError, ValueError) as err:
        notes.append(f"samples.json unreadable ({err})")
        return None


def _read_record(path: Path, notes: list[str]) -> PipelineRecord:
    try:
        return PipelineRecord.read(path)
    except ValueError as err:
        notes.append(f"pipeline.json unreadable ({err})")
        return PipelineRecord()


def collect_run(pipeline_path: Path) -> dict:
    """Everything the report shows about one run folder; missing values are None, explained in `notes`."""
    folder = RunFolder(pipeline_path.parent)
    notes: list[str] = []
    record = _read_record(pipeline_path, notes)
    stage_info = {}
    for stage in STAGES:
        info = record.stages.get(stage)
        if info is None:
            stage_info[stage] = {"status": None, "seconds": None}
            notes.append(f"stage `{stage}` not recorded in pipeline.json")
            continue
        stage_info[stage] = {"status": info.status, "seconds": info.seconds}
        if info.status != "done":
            error = f": {info.error}" if info.error else ""
            notes.append(f"stage `{stage}` {info.status or 'not run'}{error}")

    metrics = (
        _read_json(folder.evaluate_metrics, "evaluate metrics", notes)
        if stage_info["evaluate"]["status"] == "done"
        else None
    )
    seconds_per_image = (
        _seconds_per_image(folder, notes) if stage_info["sample"]["status"] == "done" else None
    )
    recon = (metrics or {}).get("reconstruction") or {}
    prior = (metrics or {}).get("prior") or {}
    generation = (metrics or {}).get("generation") or {}
    memorization = (metrics or {}).get("memorization") or {}
    for name, section in (
        ("reconstruction", recon),
        ("prior", prior),
        ("generation", generation),
        ("memorization", memorization),
    ):
        if metrics is not None and section.get("skipped"):
            notes.append(f"{name} metrics skipped: {section['skipped']}")
    intervals = {
        key: interval(section, key)
        for section, keys in (
            (recon, ("psnr", "ssim")),
            (prior, ("bits_per_dim", "bits_per_image", "marginal_bits_per_dim", "marginal_bits_per_image")),
            (generation, ("fid", "kid")),
        )
        for key in keys
    }
    memorized = {}
    for space in ("code_space", "feature_space"):
        mem = memorization.get(space) or {}
        memorized[space] = (
            {
                "value": number(mem, "memorized_fraction"),
                "ci": interval(mem, "memorized_fraction"),
                "n_generated": mem.get("n_generated"),
                "n_test": mem.get("n_test"),
                "percentile": mem.get("percentile"),
            }
            if number(mem, "memorized_fraction") is not None
            else None
        )
    per_class = {
        name: stats
        for name, stats in (generation.get("per_class") or {}).items()
        if isinstance(stats, dict) and number(stats, "fid") is not None
    }
    utility, utility_why = read_utility(folder)

    def picture(path: Path) -> Path | None:
        return path if path.is_file() else None

    return {
        "run_dir": folder.root,
        "group": record.group,
        "grid": record.grid,
        "grid_value": grid_side(record.grid),
        "overrides": record.overrides,
        "stages": stage_info,
        "psnr": number(recon, "psnr"),
        "ssim": number(recon, "ssim"),
        "codebook_usage": number(recon, "codebook_usage"),
        "perplexity": number(recon, "perplexity"),
        "bits_per_dim": number(prior, "bits_per_dim"),
        "marginal_bits_per_dim": number(prior, "marginal_bits_per_dim"),
        "bits_per_image": number(prior, "bits_per_image"),
        "marginal_bits_per_image": number(prior, "marginal_bits_per_image"),
        "fid": number(generation, "fid"),
        "kid": number(generation, "kid"),
        "kid_mean": number(generation, "kid_mean"),
        "kid_std": number(generation, "kid_std"),
        "precision": number(generation, "precision"),
        "recall": number(generation, "recall"),
        "prc_k": generation.get("prc_k"),
        "n_generated": generation.get("n_generated", generation.get("num_generated")),
        "n_real": generation.get("n_real", generation.get("num_real")),
        "feature_extractor": generation.get("feature_extractor"),
        "per_class": per_class,
        "intervals": intervals,
        "memorized": memorized,
        "generation_skipped": bool(generation.get("skipped")),
        "seconds_per_image": seconds_per_image,
        "reconstructions": picture(folder.reconstructions),
        "samples_grid": picture(folder.samples_grid),
        "memorization_picture": picture(folder.memorization_picture),
        "notes": notes,
        "utility": utility,
        # a note only when the utility stage was part of the run but left no results
        "utility_note": utility_why if "utility" in record.stages else None,
    }


def find_pipelines(sweep_dir: str | Path) -> list[Path]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist")
    found = sorted(
        p for p in sweep_dir.rglob(PIPELINE_JSON) if not any(part.startswith(".") for part in p.parts[-3:])
    )
    if not found:
        raise FileNotFoundError(
            f"no {PIPELINE_JSON} below {sweep_dir}: pass the output folder of a "
            "`python -m lesion_lightning.pipeline` run or multirun sweep"
        )
    return found


def collect_runs(sweep_dir: str | Path) -> list[dict]:
    """`collect_run` of every pipeline.json below the sweep folder, by grid size."""
    runs = [collect_run(p) for p in find_pipelines(sweep_dir)]
    runs.sort(key=lambda r: (r["grid_value"] is None, r["grid_value"] or 0, str(r["run_dir"])))
    return runs
