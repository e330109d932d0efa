"""Supervised and variational contrastive learning at scale.

Importing the package registers the loss families (``core.losses``), so the config can
validate ``loss.name`` against them."""

import core.losses  # noqa: F401  (registers every loss family)
