"""Supervised and variational contrastive learning at scale.

Three layers, each importing only the ones below it (``tests/test_layout.py`` checks it):

- building blocks: ``config``, ``errors``, ``results``, ``io``, ``fs``, ``runtime`` (and the loss
  registry's leaf table, ``losses.registry``);
- one run: ``data``, ``models``, ``losses``, ``train``, ``eval``;
- studies: ``study`` (runner, report, loggers, ablations).
"""
