"""The installed layout: one import name, nothing bare named train, runtime or convert in site-packages."""

from __future__ import annotations

import site
import sys
from pathlib import Path

import statelite


def test_one_import_name_in_site_packages():
    for folder in map(Path, site.getsitepackages()):
        for bare in ("train", "runtime", "convert"):
            assert not (folder / bare).exists(), f"{folder / bare} was installed"


def test_subpackages_ship_with_the_device_install():
    import importlib.util

    for name in ("statelite.train", "statelite.convert", "statelite.cli"):
        assert importlib.util.find_spec(name) is not None, name  # found, not executed: no TensorFlow needed
    train = Path(importlib.util.find_spec("statelite.train").origin).parent
    assert (train / "data" / "co2.csv").exists()


def test_version_matches_the_distribution():
    from importlib.metadata import version

    assert statelite.__version__ == version("statelite")
    assert sys.version_info >= (3, 10)
