"""Deprecated alias of `wit_builder.extract` (the package's name before the stages named the
layout), kept so that scripts written against the old path still run; new code imports
`wit_builder.extract`."""
