"""constcl.data: videos in, training views out, and the tools around them.

One module per concern, grouped here by what it serves:

* **training pipeline** (what a pretraining step reads): ``sources`` (folder / CSV / list ->
  video items), ``sampling`` (two clips per video, CVRL's gap sampler), ``dataset``
  (``TwoViewDataset``: decode, crop, boxes), ``regions`` (region boxes per view), ``augment``
  (geometric and photometric augmentations, on the CPU or the GPU), ``shards`` (WebDataset tar
  shards: the streaming reader, and the writer ``prepare`` uses).
* **decoders**: the ``decode`` package, one module per backend (``decode.pyav``,
  ``decode.torchcodec``) behind ``decode.decode_frames`` / ``decode.get_decoder``.
* **offline tools** (behind ``constcl data ...``): ``check`` (which videos are usable),
  ``prepare`` (a training-ready copy, optionally sharded), ``preview`` (the views the model
  would see).
* **file writers** shared by the tools, the synthetic world and the evaluations: ``encode``
  (mp4 writer), ``palette`` (DAVIS palette PNG masks).
* **synthetic world**: the ``synth`` package (the built-in data of the demo, the bench and the
  tests).

Why the pipeline and the tools stay modules side by side rather than sub-packages: they share
their file formats and checks both ways (``shards`` is written by ``prepare`` and streamed by
training; ``check.source_report`` also serves ``constcl extract``; ``preview.sample_views``
serves ``constcl viz regions``), so a sub-package per group would split one format's reader
and writer apart, and their import paths are the ones docs/data.md and docs/data_at_scale.md
give users.
"""
