"""ConST-CL losses: global NT-Xent and region InfoNCE. Pure functions, no process group needed."""

from constcl.losses.global_nt_xent import global_nt_xent
from constcl.losses.region_info_nce import match_boxes, region_info_nce

__all__ = ["global_nt_xent", "match_boxes", "region_info_nce"]
