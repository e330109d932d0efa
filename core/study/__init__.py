"""Studies: declared as data (``spec``), run as Ray Tune trials (``runner``), reported as a table,
verdicts and plots (``report``); their shared command line (``cli``) and declarative ablations
(``ablate``)."""

from core.study.claims import Claim
from core.study.cli import add_study_args, base_config, main_for, study_base
from core.study.options import StudyOptions
from core.study.runner import run_study
from core.study.space import OptunaSpace
from core.study.spec import Grid, Search, Study, Variants, grid_study_defaults, question, trial_config

__all__ = ["Study", "StudyOptions", "Grid", "Variants", "Search", "Claim", "OptunaSpace", "add_study_args", "base_config",
           "main_for", "study_base", "run_study", "grid_study_defaults", "question", "trial_config"]
