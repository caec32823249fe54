"""Errors a user can fix. Stages print them as one line and exit non-zero."""


class PipelineError(Exception):
    """Base class: the message names the problem and how to fix it."""


class ConfigError(PipelineError):
    """params.yaml has an unknown key, a wrong type or an impossible value."""


class DataError(PipelineError):
    """A data source or data artifact is missing, corrupt or laid out wrongly."""


class TrainingError(PipelineError):
    """Training cannot go on, e.g. the loss became non-finite."""
