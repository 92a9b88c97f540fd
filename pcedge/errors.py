"""One exception hierarchy for every user-facing failure.

Expected user errors derive from :class:`PcedgeError`, so the CLI can print them in one line without a
traceback. :class:`InternalError` deliberately does *not* derive from it: it marks a bug in pcedge, never
bad input, and must surface with its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class PcedgeError(Exception):
    """Root of all errors caused by input, configuration or the environment."""


class ConfigError(PcedgeError, ValueError):
    """A parameter is invalid (patch size, stride, preprocessing spec, CLI option)."""


class InsecureMaskSetError(ConfigError):
    """A mask set leaves some patch placement of its threat model uncovered.

    Refused rather than warned about: an uncovered placement silently voids the certificate.
    """


class UnsafeFileError(ConfigError):
    """A file pcedge was given would run code to be read (arbitrary pickle): refused, since files pcedge reads are data."""


class ExportError(PcedgeError):
    """A PyTorch model could not be exported, or the export failed its checks."""


class EngineError(PcedgeError):
    """An engine could not be built, loaded or run (corrupt model, wrong shapes, stale engine)."""


class SourceError(PcedgeError):
    """A video source or sink could not be opened, read or written."""


class KernelError(PcedgeError, ValueError):
    """A masking kernel was called with buffers it cannot use (wrong dtype, shape, size) or is not built."""


class DatasetError(PcedgeError):
    """A dataset could not be read or has an unsupported layout."""


class MissingDependencyError(PcedgeError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


class InternalError(Exception):
    """A bug in pcedge (an invariant that input cannot break was broken). Not a PcedgeError."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem of a configuration: ``path`` is the dotted key ('' for the whole file), ``line`` its line in the
    file (1-based; None where no line says it, e.g. a required key that is missing, or a value that came from a flag)."""

    path: str
    line: int | None
    message: str

    def where(self, source: str) -> str:
        at = f"{source}:{self.line}" if self.line else source
        return f"{at}: {self.path}" if self.path else at


class ConfigFileError(ConfigError):
    """A configuration file (or the flags beside it) that does not validate: every problem at once, each with the
    dotted path of its key (``cameras.door.regions.sign.box``) and its line in the file, so one edit fixes them all.
    ``str()`` is the readable report, one ``FILE:LINE: PATH: message`` line per problem."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = list(issues)
        count = len(self.issues)
        head = f"{source}: {count} error{'s' if count != 1 else ''}; nothing was applied"
        super().__init__("\n".join([head, *(f"  {issue.where(source)}: {issue.message}" for issue in self.issues)]))
