"""pytest configuration; the helpers live in clihelpers.py (importable by test modules)."""

from clihelpers import CONF, REPO, TINY_VQVAE, compose_config, run_cli  # noqa: F401
