"""grid.png: a seeded selection of at most 64 tiles, one row per class for a conditional prior."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clihelpers import compose_config
from PIL import Image

from lesion_lightning.samples.folder import sample_to_folder
from lesion_lightning.utils.grid import MAX_TILES, grid_selection


def test_unconditional_selection_is_seeded_distinct_and_capped() -> None:
    tiles, per_row = grid_selection(2048, None, seed=0)
    assert len(tiles) == MAX_TILES == len(set(tiles)) and per_row == 8
    assert all(0 <= i < 2048 for i in tiles)
    assert grid_selection(2048, None, seed=0) == (tiles, per_row)  # same seed, same tiles
    assert grid_selection(2048, None, seed=1)[0] != tiles
    assert grid_selection(5, None, seed=0) == ([0, 1, 2, 3, 4], 5)  # fewer samples than tiles: all


def test_conditional_selection_has_one_row_per_class() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(2, size=500, p=[0.8, 0.2]).tolist()
    labels[:3] = [2, 2, 2]  # class 2 has three samples
    tiles, per_row = grid_selection(500, labels, seed=4)
    assert per_row == 8 and len(tiles) == 3 * 8 <= MAX_TILES
    rows = [tiles[r * per_row : (r + 1) * per_row] for r in range(3)]
    for c, row in enumerate(rows):
        shown = [i for i in row if i is not None]
        assert shown and all(labels[i] == c for i in shown), (c, row)  # a row never mixes classes
        if labels.count(c) >= per_row:
            assert len(shown) == per_row
    assert labels.count(2) < per_row and rows[2][labels.count(2) :] == [None] * (per_row - labels.count(2))
    # 10 classes: rows of 6 (10 x 6 = 60 <= 64); 100 classes: the first 64 get a row of one
    many = [i % 10 for i in range(1000)]
    tiles, per_row = grid_selection(1000, many, seed=0)
    assert per_row == 6 and len(tiles) == 60
    tiles, per_row = grid_selection(1000, [i % 100 for i in range(1000)], seed=0)
    assert per_row == 1 and len(tiles) == MAX_TILES


@pytest.mark.slow
def test_sample_cli_grid_shows_a_selection(chain, tmp_path) -> None:
    n = 70  # more than fit: the grid must select, not draw every sample
    cfg = compose_config(
        "sample",
        [f"pixelcnn_ckpt={chain['pixelcnn']}", f"num_samples={n}", f"out_dir={tmp_path / 's'}"],
        tmp_path,
    )
    out = sample_to_folder(cfg)
    meta = json.loads((out / "samples.json").read_text())
    tiles, per_row = meta["grid_png"]["tiles"], meta["grid_png"]["per_row"]
    classes = sorted(set(meta["label_indices"]))
    assert len(tiles) == len(classes) * per_row <= MAX_TILES < n
    for r in range(len(classes)):
        row = [meta["label_indices"][i] for i in tiles[r * per_row : (r + 1) * per_row] if i is not None]
        assert set(row) == {classes[r]}
    with Image.open(out / "grid.png") as grid, Image.open(out / "sample_0000.png") as one:
        tile = one.width
        # make_grid: per_row tiles of `tile` px plus 2 px padding around each
        assert grid.width == per_row * (tile + 2) + 2
        assert grid.height > len(classes) * (tile + 2)  # caption bands above each row of tiles
        assert grid.height < (len(classes) + 1) * (tile + 2 + 24)
