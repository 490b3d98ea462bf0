"""Every `python -m lesion_lightning.<stage> ...` command in the README and docs/*.md composes, and so do
the stage commands a documented pipeline command would run; every docs page is linked from the README.
Docs that drift from the configs fail here."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from clihelpers import REPO, compose_config
from hydra.core.override_parser.overrides_parser import OverridesParser

from lesion_lightning.bench import _positional_to_override
from lesion_lightning.pipeline import STAGES, Pipeline, _stage_overrides_to_force_add, sweep_group

CONFIG_OF = {
    "train": "train",
    "encode": "encode",
    "sample": "sample",
    "evaluate": "evaluate",
    "utility": "utility",
    "pipeline": "pipeline",
    "bench": "bench",
    "score": "score",
}


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def readme_commands() -> list[tuple[str, list[str]]]:
    text = "\n".join(page.read_text() for page in DOCS)
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if not line.startswith("python -m lesion_lightning."):
                continue
            line = re.sub(r"<[^>]*>", "X", line)  # <time>, <run dir> placeholders
            words = shlex.split(line)
            commands.append((words[2].split(".", 1)[1], words[3:]))
    return commands


def first_of_sweeps(overrides: list[str]) -> list[str]:
    """`grid=32,64,128` -> `grid=32`: compose one job of a multirun."""
    parser, out = OverridesParser.create(), []
    for o in overrides:
        parsed = parser.parse_overrides([o])[0]
        out.append(
            f"{parsed.get_key_element()}={next(parsed.sweep_string_iterator())}"
            if parsed.is_sweep_override()
            else o
        )
    return out


COMMANDS = [c for c in readme_commands() if c[0] in CONFIG_OF]


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    unlinked = [p.name for p in DOCS[1:] if f"(docs/{p.name})" not in readme]
    assert DOCS[1:] and not unlinked, f"link these from the README's reference pages: {unlinked}"


def test_readme_has_the_commands() -> None:
    stages = {stage for stage, _ in COMMANDS}
    assert {"train", "encode", "sample", "evaluate", "pipeline", "bench"} <= stages


@pytest.mark.parametrize(("stage", "args"), COMMANDS, ids=[" ".join([s, *a])[:80] for s, a in COMMANDS])
def test_readme_command_composes(stage: str, args: list[str], tmp_path: Path) -> None:
    args = [a for a in args if a != "-m"]
    if stage == "bench":
        args = _positional_to_override(["bench", *args])[1:]
    if stage == "pipeline":
        args = _stage_overrides_to_force_add(args)
    cfg = compose_config(CONFIG_OF[stage], first_of_sweeps(args), tmp_path)
    if stage != "pipeline":
        return
    # the stage commands the pipeline would run compose too
    pipeline = Pipeline(sweep_group(cfg), tmp_path)
    for name in (s for s in STAGES if s in cfg.stages):
        cmd = pipeline.command(name)
        module, overrides = cmd[2], cmd[3:]
        compose_config(CONFIG_OF[module.split(".")[1]], overrides, tmp_path / name)
