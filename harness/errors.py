"""User-facing errors: one line that names the value and the fix; the CLI exits with code 2."""

from __future__ import annotations


class PrunebenchError(Exception):
    """A problem with the user's input or environment, reported as one line (exit code 2)."""


class UnknownNameError(PrunebenchError, KeyError):
    """A name that no registry knows; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(PrunebenchError):
    """A data set that is missing or not in the expected on-disk layout."""


class CheckpointError(PrunebenchError):
    """A checkpoint that cannot be read (truncated, corrupt, or for another model)."""


class ProfileError(PrunebenchError):
    """A hardware profile that is malformed or cannot be used on this machine."""
