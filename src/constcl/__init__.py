"""ConST-CL: contextualized spatio-temporal contrastive video representation learning."""

__version__ = "0.1.0"
