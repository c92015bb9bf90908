"""The library's error types: every error a user can cause derives from :class:`MoERetrieverError`.

The command line reports these as a one-line message with exit code 2; any other exception is a
bug in the library and keeps its traceback. Each type also derives from the built-in exception
callers caught before it existed (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working.
"""

from __future__ import annotations


class MoERetrieverError(Exception):
    """Base of the errors a user can cause (bad config, data, files, arguments)."""


class ConfigError(MoERetrieverError, ValueError):
    """A configuration value or key is invalid; the message names the dotted key."""


class DataValidationError(MoERetrieverError, ValueError):
    """Input data is malformed; the message names the sample, modality or file at fault."""


class InputNotFoundError(MoERetrieverError, FileNotFoundError):
    """A file or directory the user named (data, run, checkpoint folder) does not exist."""


class CheckpointError(MoERetrieverError, ValueError):
    """A checkpoint is unreadable or does not match the model it is loaded into."""


class TrainingDivergedError(MoERetrieverError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class UsageError(MoERetrieverError, ValueError):
    """A command or function was asked for something it cannot do (a bad argument combination,
    an analysis the chosen method does not support)."""


class MissingDependencyError(MoERetrieverError, ImportError):
    """An optional package is needed; the message says what to install."""
