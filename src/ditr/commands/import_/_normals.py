"""The ``--normals`` option of the importers whose sources may lack normals (a helper, not a format).

One name and one meaning everywhere: ``source`` keeps what the source has (nothing where it has
none), ``estimate`` fills in what it lacks with :func:`ditr.normals.estimate_normals`. The indoor
presets read colour + normal, so a scene imported without normals cannot train with them.
"""

from __future__ import annotations

import argparse

CHOICES = ("source", "estimate")


def add_normals_option(s: argparse.ArgumentParser, default: str = "source") -> None:
    s.add_argument("--normals", choices=CHOICES, default=default,
                   help="source: keep the source's normals (none where it has none); estimate: estimate the "
                        "normals a scene lacks from its points (the indoor presets read normals; "
                        f"docs/datasets.md#normals; default {default})")
