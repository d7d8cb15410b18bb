"""ConST-CL: contextualized spatio-temporal contrastive video representation learning.

``constcl.load_encoder(checkpoint, branch=..., backbone=...)`` gives a frozen encoder in one
call (:mod:`constcl.features.encoder`); it is imported on first use, so ``import constcl``
stays cheap (no PyTorch import).
"""

from __future__ import annotations

from typing import Any

from constcl.version import __version__

__all__ = ["__version__", "load_encoder"]


def __getattr__(name: str) -> Any:
    if name == "load_encoder":
        from constcl.features.encoder import load_encoder

        return load_encoder
    raise AttributeError(f"module 'constcl' has no attribute {name!r}")
