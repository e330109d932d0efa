"""The run directory: what a run is called and identified by, its files and their shapes, its
checkpoint format, where it lives and how it is mirrored to object storage.

One layer below training and evaluation, which both read and write runs through it:

- :mod:`core.runs.identity`: the config hash, the hash of earlier versions, the run name, and the one
  rule that says whether a recorded hash is this config's run;
- :mod:`core.runs.rundir`: :class:`RunDir`, every file name, ``config.json``'s shape, the run's result;
- :mod:`core.runs.checkpoint`: :class:`TrainState` (a checkpoint), saving, loading, resuming;
- :mod:`core.runs.storage`: where a run lives (a local or shared path, or a working copy mirrored to
  an object store) and the copies between them.
"""
