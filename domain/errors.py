"""Why a command was refused, in the words of the partner API: each error carries the spec's
error code, and a field name when the caller sent something malformed."""

from __future__ import annotations


class DomainError(Exception):
    """A refused command. `code` is the partner API's error code for it."""

    code = "invalid_request"

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidCommand(DomainError):
    """The command itself is malformed (a 422 `invalid_request` naming the field)."""


class AlreadyExists(DomainError):
    """A slug, code or id is already claimed by something else."""

    code = "already_exists"


class NotFound(DomainError):
    """The command names something that does not exist (or is not the caller's)."""

    code = "not_found"
