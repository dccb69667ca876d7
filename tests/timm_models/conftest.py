"""Runs timm's own model tests (timm_test_models.py, timm 1.0.31, unchanged) on the vHeat models.

``import vheat`` registers vheat_tiny / vheat_small / vheat_base with timm before the test
module calls ``timm.list_models`` at import time; the markers are the ones timm's pyproject.toml
declares (this repo runs pytest with --strict-markers), plus ``timeout``, which timm's file uses
through the pytest-timeout plugin (not installed here: the marker is then inert).
"""
import vheat  # noqa: F401  (registers the timm models)

TIMM_MARKERS = ("base", "forward", "backward", "cfg", "cfg_nonstd", "torchscript", "features",
                "fxforward", "fxbackward", "timeout")


def pytest_configure(config):
    for marker in TIMM_MARKERS:
        config.addinivalue_line("markers", f"{marker}: timm's marker (tests/timm_models/timm_test_models.py)")
