"""Shared plumbing of the AWS adapters: settings, botocore clients, URL options, errors.

Imported only by the S3, DynamoDB and SQS adapters and by ``shardflow doctor``, never at
CLI start-up (it imports boto3).

Credentials come only from the standard provider chain (environment, shared config,
SSO, container or instance roles); nothing here reads or logs them. Retries are
botocore's own, in ``standard`` or ``adaptive`` mode with a bounded number of attempts:
the adapters add no second retry layer on top, except where an error is not one
botocore retries (a DynamoDB transaction cancelled by a conflict, unprocessed batch
items). botocore debug logging is never switched on: it would print request
signatures.

Endpoint overrides (an emulator such as moto, or an S3-compatible store) come from the
config (``backends.endpoint_url``), a URL's ``endpoint=`` option, or botocore's own
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>`` environment variables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shardflow.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

RETRY_MODES = frozenset({"standard", "adaptive"})
DEFAULT_MAX_ATTEMPTS = 5
# URL query options every AWS adapter understands (each adapter may add its own).
COMMON_OPTIONS = frozenset({"region", "endpoint", "kms_key_id", "retry_mode", "max_attempts"})

__all__ = [
    "COMMON_OPTIONS",
    "AwsSettings",
    "AwsUrl",
    "aws_error",
    "botocore_config",
    "dynamodb_client",
    "error_code",
    "http_status",
    "parse_aws_url",
    "retried",
    "s3_client",
    "settings_from",
    "sqs_client",
]


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """How to reach AWS: region, endpoint override, KMS key, retries and timeouts.

    ``region`` and ``endpoint_url`` None mean botocore's own resolution (environment,
    shared config). ``max_attempts`` counts the first try. Raises ConfigError for a
    retry mode other than ``standard``/``adaptive``, attempts below 1, non-positive
    timeouts or an endpoint that is not http(s).
    """

    region: str | None = None
    endpoint_url: str | None = None
    kms_key_id: str | None = None
    retry_mode: str = "standard"
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_pool_connections: int = 32

    def __post_init__(self) -> None:
        if self.retry_mode not in RETRY_MODES:
            raise ConfigError(f"retry_mode must be one of {sorted(RETRY_MODES)}")
        if not 1 <= self.max_attempts <= 20:
            raise ConfigError("max_attempts must be between 1 and 20")
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.endpoint_url is not None and urlsplit(self.endpoint_url).scheme not in (
            "http",
            "https",
        ):
            raise ConfigError(f"endpoint must be an http(s) URL, got {self.endpoint_url!r}")

    def query(self) -> str:
        """The URL query that reopens a store with these settings (``""`` if none)."""
        pairs = [
            (name, value)
            for name, value in (
                ("region", self.region),
                ("endpoint", self.endpoint_url),
                ("kms_key_id", self.kms_key_id),
            )
            if value
        ]
        if self.retry_mode != "standard":
            pairs.append(("retry_mode", self.retry_mode))
        if self.max_attempts != DEFAULT_MAX_ATTEMPTS:
            pairs.append(("max_attempts", str(self.max_attempts)))
        if not pairs:
            return ""
        return "?" + "&".join(f"{k}={quote(v, safe=':/')}" for k, v in pairs)


@dataclass(frozen=True, slots=True)
class AwsUrl:
    """A parsed ``scheme://location/path?options`` adapter URL."""

    scheme: str
    location: str
    path: str
    options: Mapping[str, str]


def _shown(url: str) -> str:
    """``url`` for an error message: everything up to its last ``@`` (a user part and
    password, however malformed) masked, and option values dropped."""
    scheme, sep, rest = url.partition("://")
    rest = rest.split("?", 1)[0] + ("?…" if "?" in rest else "")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def parse_aws_url(url: str, scheme: str, extra_options: Iterable[str] = ()) -> AwsUrl:
    """Split an adapter URL; ConfigError for another scheme, no location, a fragment,
    a user part, or an option that is not in :data:`COMMON_OPTIONS` or ``extra_options``.
    Messages never repeat a user part."""
    parts = urlsplit(url)
    if parts.scheme != scheme or not parts.netloc:
        raise ConfigError(f"expected a {scheme}://NAME URL, got {_shown(url)!r}")
    if parts.fragment or "@" in parts.netloc:
        raise ConfigError(
            f"{_shown(url)!r}: no fragment or user part allowed in a {scheme}:// URL "
            "(AWS credentials come from the provider chain)"
        )
    allowed = COMMON_OPTIONS | frozenset(extra_options)
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key not in allowed:
            raise ConfigError(f"{_shown(url)!r}: unknown option {key!r} (known: {sorted(allowed)})")
        options[key] = value
    return AwsUrl(parts.scheme, parts.netloc, parts.path.strip("/"), options)


def settings_from(
    options: Mapping[str, str],
    *,
    endpoint_url: str | None,
    region: str | None,
    kms_key_id: str | None,
    base: AwsSettings | None = None,
) -> AwsSettings:
    """Settings from a URL's options over the config's values (the URL is more specific)."""
    try:
        attempts = int(options["max_attempts"]) if "max_attempts" in options else None
    except ValueError as exc:
        raise ConfigError(
            f"max_attempts must be an integer, got {options['max_attempts']!r}"
        ) from exc
    settings = base or AwsSettings()
    return replace(
        settings,
        region=options.get("region") or region or settings.region,
        endpoint_url=options.get("endpoint") or endpoint_url or settings.endpoint_url,
        kms_key_id=options.get("kms_key_id") or kms_key_id or settings.kms_key_id,
        retry_mode=options.get("retry_mode", settings.retry_mode),
        max_attempts=attempts if attempts is not None else settings.max_attempts,
    )


def botocore_config(settings: AwsSettings, **extra: Any) -> Config:
    """The botocore Config: bounded retries in the chosen mode, timeouts, pool size."""
    # total_max_attempts counts the first try ("max_attempts" would count retries only)
    retries: Any = {"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts}
    return Config(
        region_name=settings.region,
        retries=retries,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=settings.max_pool_connections,
        **extra,
    )


def _session(settings: AwsSettings) -> boto3.session.Session:
    # one session per store: boto3's default session is shared module state and not
    # thread-safe to create clients from concurrently
    try:
        return boto3.session.Session(region_name=settings.region)
    except BotoCoreError as exc:  # a profile named in AWS_PROFILE that is not configured
        raise aws_error(exc, "AWS session") from exc


def s3_client(settings: AwsSettings) -> S3Client:
    # path-style addressing for endpoint overrides: emulators and S3-compatible stores
    # rarely serve virtual-hosted bucket names
    extra: dict[str, Any] = {}
    if settings.endpoint_url:
        extra["s3"] = {"addressing_style": "path"}
    return _session(settings).client(
        "s3", endpoint_url=settings.endpoint_url, config=botocore_config(settings, **extra)
    )


def dynamodb_client(settings: AwsSettings) -> DynamoDBClient:
    return _session(settings).client(
        "dynamodb", endpoint_url=settings.endpoint_url, config=botocore_config(settings)
    )


def sqs_client(settings: AwsSettings) -> SQSClient:
    return _session(settings).client(
        "sqs", endpoint_url=settings.endpoint_url, config=botocore_config(settings)
    )


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError (``""`` for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(exc: BaseException) -> int | None:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def retried(exc: BaseException) -> bool:
    """True if botocore sent the failed request more than once (an earlier try may
    have landed before its response was lost)."""
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) > 0
    return False


_MISSING = frozenset(
    {
        "NoSuchBucket",
        "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NonExistentQueue",
    }
)
_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "UnrecognizedClientException",
        "KMS.AccessDeniedException",
    }
)
FIX_MISSING = "create it with `shardflow doctor JOB.yaml --create` (or infra/terraform)"


def aws_error(exc: ClientError | BotoCoreError, what: str) -> StoreError:
    """A StoreError saying what failed, AWS's code and message (never credentials) and,
    for the mistakes a user makes (a missing bucket, table or queue, no credentials, no
    access, an endpoint that does not answer), what to do about it."""
    from botocore.exceptions import (
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        message = error.get("Message", "")
        text = f"{what}: {code} {message}".rstrip()
        if code in _MISSING:
            return StoreError(f"{text}: it does not exist; {FIX_MISSING}")
        if code in _DENIED:
            return StoreError(
                f"{text}: access denied; check the AWS credentials or role in use "
                "(docs/aws.md lists what each role needs)"
            )
        return StoreError(text)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StoreError(
            f"{what}: no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or run where a role is attached"
        )
    if isinstance(exc, ProfileNotFound):
        return StoreError(
            f"{what}: {exc}; set AWS_PROFILE to a profile of ~/.aws/config, or unset it"
        )
    if isinstance(exc, NoRegionError):
        return StoreError(f"{what}: no AWS region; set backends.region or AWS_DEFAULT_REGION")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return StoreError(
            f"{what}: cannot reach the AWS endpoint ({exc}); check backends.endpoint_url, "
            "the region and the network"
        )
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")
