"""Weight conversion from other frameworks: TF Model Garden CVRL checkpoints
(:mod:`constcl.convert.cvrl`, read by the TensorFlow-free :mod:`constcl.convert.tf_bundle`)."""

from constcl.convert.cvrl import NAME_TABLE, ConvertSettings, convert_cvrl, map_variables
from constcl.convert.tf_bundle import TensorBundle, find_checkpoint

__all__ = ["NAME_TABLE", "ConvertSettings", "TensorBundle", "convert_cvrl", "find_checkpoint",
           "map_variables"]
