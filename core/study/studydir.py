"""A study's directories and the names of its files, in one place (as ``core.runs.rundir`` is for a run).

``results`` (local: the driver writes it) holds the table, the report, its plots and the records the driver
keeps; ``storage`` (the results directory, a shared path or an object-store URI) holds Tune's state, every
run and, on a cluster, the corrupted evaluation split every node reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.fs import is_uri, join
from core.runtime import multi_node

TUNE, RUNS, CACHE = "tune", "runs", "cache"  # in the storage
TABLE_FILE, REPORT_FILE, CLAIMS_FILE = "trials.parquet", "report.md", "claims.parquet"  # in the results directory
TIMING_FILE = "timing.json"  # beside report.md: the study's trial counts, wall and summed trial time, date, commit
SPEC_FILE = "study.json"  # what a study ran: in its results directory, and in its storage when that is apart
OWNER_FILE = "study-owner.json"  # in a separate local storage: the results directory whose study wrote it
TUNER_STATE = "tuner.pkl"  # Tune's pickle, in the storage's tune/
TUNER_RECORD = "tuner-state.json"  # its sha256, in the results directory (the driver's disk)
MLRUNS = "mlruns"  # --logger mlflow's file store, in the results directory


@dataclass(frozen=True)
class StudyDirs:
    """Where a study writes: ``results`` (table, report, plots; local) and ``storage`` (Tune's state and
    the runs; a shared path or an object-store URI on a cluster)."""

    results: Path
    storage: str

    @property
    def apart(self) -> bool:
        """Whether the storage is somewhere else than the results directory."""
        return self.storage.rstrip("/") != str(self.results)

    @property
    def tune(self) -> str:
        return join(self.storage, TUNE)

    @property
    def runs(self) -> str:
        return join(self.storage, RUNS)

    @property
    def corruption_cache(self) -> str | None:
        """Where the trials find the corrupted evaluation split the driver built: the study's storage when
        the trials may run on other nodes (or it is an object store), else each node's own cache."""
        return join(self.storage, CACHE) if is_uri(self.storage) or multi_node() else None

    def file(self, name: str) -> Path:
        """One of the results directory's files (``TABLE_FILE``, ``SPEC_FILE``...)."""
        return self.results / name
