"""Using the representation: a frozen encoder in one call (:func:`load_encoder`) and features of
anyone's videos (:func:`extract`, behind ``constcl extract``).

Imports are lazy so that ``import constcl.features`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Encoder", "ExtractResult", "ExtractSettings", "extract", "load_encoder"]

_LOCATIONS = {"Encoder": "encoder", "load_encoder": "encoder", "ExtractSettings": "extract",
              "ExtractResult": "extract", "extract": "extract"}


def __getattr__(name: str) -> Any:
    if name not in _LOCATIONS:
        raise AttributeError(f"module 'constcl.features' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"constcl.features.{_LOCATIONS[name]}"), name)
