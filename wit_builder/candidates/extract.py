"""Deprecated: `wit_builder.extract.stage` and `wit_builder.extract.plan` under their old path."""

import warnings

from wit_builder.extract.plan import InputFile, format_of
from wit_builder.extract.plan import plan_files as plan
from wit_builder.extract.stage import Options, extract_file, run

__all__ = ["InputFile", "Options", "extract_file", "format_of", "plan", "run"]

warnings.warn("wit_builder.candidates.extract is now wit_builder.extract.stage (and .plan)",
              DeprecationWarning, stacklevel=2)
