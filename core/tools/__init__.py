"""Tooling around the platform, not part of a run or a study: the local autoscaled cluster made from
``cluster.yaml`` (``python -m core.tools.cluster local up``), used by the README's one-machine cluster
flow, the tests and the benchmarks; and realistic JPEG folders made from bundled photos (``photos``),
the benchmarks' and tests' ImageNet-shaped data. Installed with the package; nothing in the platform
imports it.
"""
