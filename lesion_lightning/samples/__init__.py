"""Sampling a trained prior into a folder of lesions (the `sample` command's library, also used by the
utility stage and the guidance benchmark).

folder.py   sample_to_folder(cfg): prior -> code grids -> decoder -> PNGs, grid.png, samples.json
config.py   the sample command's config for a library caller (conf/sample.yaml + overrides)
"""
