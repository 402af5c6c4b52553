"""Domain errors. Each carries the HTTP status it maps to; adapters translate them in one place."""

from __future__ import annotations


class FerrymanError(Exception):
    """Base of every error ferryman raises on purpose."""

    status: int = 500


class SpecError(FerrymanError):
    """A ModelDeployment spec is invalid (the message names the field path)."""

    status = 422


class ModelStoreError(FerrymanError):
    """A model could not be fetched, verified or loaded."""

    status = 503


class InvalidInput(FerrymanError):
    """The request is malformed or does not match the model's signature."""

    status = 400


class ModelNotFound(FerrymanError):
    status = 404


class VersionNotFound(ModelNotFound):
    pass


class NotReady(FerrymanError):
    status = 503


class PayloadTooLarge(FerrymanError):
    status = 413


class Overloaded(FerrymanError):
    """Too many requests in flight; the caller should retry later."""

    status = 503
    retry_after_seconds = 1


class RequestTimeout(FerrymanError):
    """The client did not send the whole request within the request timeout."""

    status = 408


class Unauthorized(FerrymanError):
    status = 401


class Forbidden(FerrymanError):
    status = 403


class Conflict(FerrymanError):
    status = 409


class InferenceFailed(FerrymanError):
    """The runtime failed while computing a prediction (a server-side fault, not the caller's)."""

    status = 500
