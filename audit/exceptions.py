"""The one place trustaudit's errors are defined.

Every error a user can cause carries an ``exit_code`` (2: bad input or usage) and a message of
one line that names the parameter or file at fault, what is allowed and what came. The CLI
prints ``trustaudit: error: <message>`` and exits with that code; it never shows a traceback for
these. Errors also subclass the builtin a Python caller would expect.

Tree::

    TrustAuditError (Exception)                       exit 2
    ├── UsageError (TrustAuditError, ValueError)      a flag or argument is wrong
    ├── SpecError (TrustAuditError, ValueError)       the audit spec is invalid
    │   └── NothingAuditedError                       every selected check was SKIPPED
    ├── DataError (TrustAuditError, ValueError)       a data file or a column is unusable
    │   └── DataFileError (DataError, OSError-like)   missing, empty, unparsable, too large
    ├── ModelError (TrustAuditError, ValueError)      a model cannot be used
    │   ├── ModelLoadError                            missing file, unknown or broken format
    │   │   └── UnsafeModelError                      refused for safety (pickle, untrusted types)
    │   └── ModelOutputError                          predictions of the wrong shape or kind
    ├── GraphError (TrustAuditError, ValueError)      a causal graph is invalid
    ├── StoreError (TrustAuditError, RuntimeError)    the history store cannot be used
    └── ConfigError (TrustAuditError, ValueError)     other bad configuration (federated, DP claims)

    CheckNotApplicable (Exception)                    raised inside a check to mean SKIPPED
    MissingExtraError (TrustAuditError, ImportError)  an optional dependency is not installed
"""

from __future__ import annotations

__all__ = [
    "CheckNotApplicable",
    "ConfigError",
    "DataError",
    "DataFileError",
    "GraphError",
    "MissingExtraError",
    "ModelError",
    "ModelLoadError",
    "ModelOutputError",
    "NothingAuditedError",
    "SpecError",
    "StoreError",
    "TrustAuditError",
    "UnsafeModelError",
    "UsageError",
]


class TrustAuditError(Exception):
    """Base of every error a user can cause; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        # one line, always: the CLI prints it as is
        message = " ".join(str(message).split())
        super().__init__(message)
        self.message = message


class UsageError(TrustAuditError, ValueError):
    """A command-line flag or a function argument is wrong."""


class SpecError(TrustAuditError, ValueError):
    """The audit spec (TOML or flags) is invalid."""


class NothingAuditedError(SpecError):
    """Every selected check was SKIPPED: an audit that ran nothing is not a pass (exit 2).

    The message names the inputs that would let the checks run; ``report`` is the audit's report
    (every result SKIPPED), for a caller that wants to show it.
    """

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class DataError(TrustAuditError, ValueError):
    """A data file or one of its columns cannot be used for the audit."""


class DataFileError(DataError):
    """A data file is missing, empty, unparsable or too large."""


class ModelError(TrustAuditError, ValueError):
    """A model cannot be used."""


class ModelLoadError(ModelError):
    """A model file is missing, of an unknown format, or broken."""


class UnsafeModelError(ModelLoadError):
    """A model file was refused for safety (pickle without the unsafe flag, untrusted types)."""


class ModelOutputError(ModelError):
    """A model's predictions have the wrong shape or kind."""


class GraphError(TrustAuditError, ValueError):
    """A causal graph is invalid (a cycle, an unknown node, a missing treatment...)."""


class StoreError(TrustAuditError, RuntimeError):
    """The history store cannot be opened or written."""


class ConfigError(TrustAuditError, ValueError):
    """Other invalid configuration (a DP claim, a federated run)."""


class MissingExtraError(TrustAuditError, ImportError):
    """An optional dependency is not installed; the message names what to install."""


class CheckNotApplicable(Exception):  # noqa: N818 - a signal, not an error
    """Raised inside a check to mean "this check does not apply here" (result SKIPPED).

    The message says what the user should provide for the check to run.
    """
