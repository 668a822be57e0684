"""Packaging glue that ``pyproject.toml`` cannot express (everything else lives there).

The dashboard's ``templates/`` and ``static/`` folders, ``examples/`` and ``systemd/`` stay at
the top of the repository; the wheel installs them inside the package as
``trioproxy/templates``, ``trioproxy/static``, ``trioproxy/examples`` and ``trioproxy/systemd``
(data-only packages mapped with ``package_dir``), so ``trioproxy serve`` finds them from any
working directory and ``trioproxy example-config [--systemd]`` prints the installed copies.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

ASSETS = {
    "trioproxy.templates": "templates",
    "trioproxy.static": "static",
    "trioproxy.examples": "examples",
    "trioproxy.systemd": "systemd",
}


def data_packages() -> list[str]:
    """Each asset folder and every folder below it, as a dotted package name."""
    names = []
    for package, folder in ASSETS.items():
        for d in [Path(folder), *sorted(p for p in Path(folder).rglob("*") if p.is_dir())]:
            names.append(".".join([package, *d.parts[1:]]))
    return names


setup(
    packages=[
        *find_namespace_packages(include=["trioproxy", "trioproxy.*"], exclude=["*.__pycache__"]),
        *data_packages(),
    ],
    package_dir=ASSETS,
    package_data={
        "trioproxy": ["py.typed"],
        # the pair verifier's WordNet extract (loadtest/build_thesaurus.py), alias table, weights
        "trioproxy.cache": ["thesaurus.txt", "aliases.txt", "pair_cross_encoder.onnx"],
        **{name: ["*"] for name in data_packages()},
    },
)
