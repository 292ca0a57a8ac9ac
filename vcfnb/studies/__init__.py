"""Study-specific glue: one module per study notebook (``vc.studies.ovf`` …), imported lazily."""
from __future__ import annotations

import importlib

_STUDIES = ("vcf", "osteoporosis", "ovf", "metastasis")


def __getattr__(name: str):
    if name in _STUDIES:
        module = importlib.import_module(f"vcfnb.studies.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'vcfnb.studies' has no attribute {name!r}")
