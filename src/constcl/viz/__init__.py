"""Pictures of what a trained network does (``constcl viz ...``).

``viz.regions``: the region branch's box matches between the two views and its decoder's
attention over the context frames; ``viz.figure`` draws them.
"""
