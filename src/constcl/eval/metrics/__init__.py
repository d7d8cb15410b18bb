"""Pure-numpy metrics for the four downstream evaluations.

* :mod:`.ava_map` -- AVA frame-level detection mAP at IoU 0.5 (ActivityNet / PySlowFast evaluator).
* :mod:`.tracking` -- OTB one-pass evaluation: precision at 20 px and success AUC (got10k).
* :mod:`.davis` -- DAVIS-2017 J, F and J&F (davis2017-evaluation).
* :mod:`.classification` -- top-k accuracy, video-level score aggregation, retrieval hit@k.
"""
