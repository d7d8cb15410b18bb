"""The network a pretraining config describes (:func:`model_from_config`).

Apart from the training engine so that whatever rebuilds a pretrained network from its saved
config (``constcl viz regions``, a user's notebook) imports the config and the models only.
"""

from __future__ import annotations

from constcl.config import Config
from constcl.models import LossWeights, build_model
from constcl.models.constcl import ConSTCL

__all__ = ["model_from_config"]


def model_from_config(cfg: Config) -> ConSTCL:
    """The network ``cfg`` describes, freshly initialised (no ``model.init_from``), on CPU."""
    m = cfg.model
    return build_model(m.backbone, variant=m.variant, local_source=m.local_source,
                       context_length=m.context_length, zero_init_residual=m.zero_init_residual,
                       losses=LossWeights(**vars(cfg.loss)), input_norm=m.input_norm,
                       padding=m.padding, embed_dim=m.embed_dim,
                       decoder_layers=m.decoder_layers, decoder_units=m.decoder_units,
                       decoder_width=m.decoder_width, num_classes=m.num_classes)
