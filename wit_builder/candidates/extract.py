"""Deprecated: `wit_builder.extract.stage`, `.files` and `.plan` under their old path."""

import warnings

from wit_builder.extract.plan import InputFile, format_of
from wit_builder.extract.plan import plan_files as plan
from wit_builder.extract.files import Options, extract_file
from wit_builder.extract.stage import run

__all__ = ["InputFile", "Options", "extract_file", "format_of", "plan", "run"]

warnings.warn("wit_builder.candidates.extract is now wit_builder.extract.stage (and .plan)",
              DeprecationWarning, stacklevel=2)
