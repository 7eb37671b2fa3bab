"""Reading botocore errors: which are transient, and a one-line message for a person."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from imagekit.util.errors import ImagekitError, UsageError

RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "InternalError",
        "InternalServerError",
        "InternalServerException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_transient(exc: BaseException) -> bool:
    """Throttling, 5xx, and connection trouble are worth another try; the rest are not."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    return error_code(exc) in RETRYABLE_CODES or http_status(exc) >= 500


def describe(exc: BaseException) -> str:
    """`Code: message` for a ClientError, str() for anything else."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code', '?')}: {err.get('Message', '')}".rstrip(": ")
    return str(exc) or type(exc).__name__


# --- botocore exceptions as one line for a person ------------------------------------------------

INVALID_INPUT_PREFIXES = ("Invalid", "Malformed", "MissingParameter", "UnknownParameter", "ValidationError",
                          "ValidationException")
NOT_FOUND_SUFFIXES = (".NotFound", "NotFound", "NoSuchBucket", "NoSuchKey", "NoSuchEntity")
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden",
                          "AuthFailure", "OptInRequired"})
CREDENTIAL_CODES = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
                              "ExpiredTokenException", "InvalidAccessKeyId", "UnrecognizedClientException",
                              "AuthFailure.ServiceLinkedRoleCreationNotPermitted"})
OBJECT_PARAMS = ("ImageId", "ImageIds", "SourceImageId", "SnapshotId", "SnapshotIds", "Name", "Bucket", "Key",
                 "RoleName", "ImportTaskIds", "KernelId", "Resources")


@dataclass(frozen=True)
class AwsCall:
    """Which call failed: service, region, operation (API name) and its parameters."""

    service: str
    region: str
    operation: str
    params: dict[str, Any]

    @property
    def what(self) -> str:
        """`ec2 DescribeImages ImageIds=ami-1 in us-east-1`: the operation and the object."""
        shown = [f"{k}={_short(self.params[k])}" for k in OBJECT_PARAMS if k in self.params]
        shown += [f"{f.get('Name')}={_short(f.get('Values', []))}" for f in self.params.get("Filters", [])[:1]]
        return " ".join([self.service, self.operation, *shown[:2]]) + f" in {self.region}"


def _short(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value[:3]) + (",..." if len(value) > 3 else "")
    return str(value)


CALL_ATTR = "_imagekit_call"


def note_call(exc: BaseException, call: AwsCall) -> None:
    """Remember on the exception which call raised it (the innermost call wins)."""
    if getattr(exc, CALL_ATTR, None) is None:
        setattr(exc, CALL_ATTR, call)


def call_of(exc: BaseException) -> AwsCall | None:
    call = getattr(exc, CALL_ATTR, None)
    return call if isinstance(call, AwsCall) else None


def exit_code_for(code: str) -> int:
    """2 when the request was bad input or the credentials are (the user fixes the command); 1 otherwise."""
    if code in CREDENTIAL_CODES or code.startswith(INVALID_INPUT_PREFIXES) or code.endswith(NOT_FOUND_SUFFIXES):
        return 2
    return 1


def client_error_hint(code: str, call: AwsCall | None) -> str:
    action = f"{call.service}:{call.operation}" if call else "that action"
    if code in DENIED_CODES:
        return (f"the AWS identity in use (see `aws sts get-caller-identity`) needs permission for {action}; "
                "check --profile / AWS_PROFILE and its IAM policy")
    if code in CREDENTIAL_CODES:
        return "the credentials are wrong or expired: `aws configure` or `aws sso login`, or check AWS_ACCESS_KEY_ID"
    if code in RETRYABLE_CODES:
        return "AWS kept throttling after imagekit's retries: wait a minute and re-run the same command (it resumes)"
    if code.startswith("InvalidAMIID") or code.startswith("InvalidSnapshot"):
        return "AMIs and snapshots belong to one region and account: check the id, --region and --profile"
    return "see the AWS error above; re-run the same command once it is fixed (done work is kept)"


def user_error(exc: BaseException) -> ImagekitError | None:
    """The one-line error for a botocore exception (None for anything else)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    call = call_of(exc)
    where = f"{call.what}: " if call else ""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if call is None:
            where = f"{exc.operation_name}: "
        attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts")
        tries = f" (after {int(attempts) + 1} attempts)" if attempts else ""
        error = UsageError if exit_code_for(code) == 2 else ImagekitError
        return error(f"{where}{describe(exc)}{tries}", hint=client_error_hint(code, call))
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return UsageError(
            f"{where}no AWS credentials: {exc}",
            hint="set them with `aws configure` (or --profile / AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY); against `imagekit local-cloud` any values work",
        )
    if isinstance(exc, ProfileNotFound):
        return UsageError(f"{where}{exc}", hint="`aws configure list-profiles` lists the profiles")
    if isinstance(exc, EndpointConnectionError):
        return ImagekitError(
            f"{where}cannot connect to {exc.kwargs.get('endpoint_url', 'the endpoint')}",
            hint="check --endpoint-url / AWS_ENDPOINT_URL (is `imagekit local-cloud` running?), the region and "
            "the network",
        )
    if isinstance(exc, NoRegionError):
        return UsageError(f"{where}no AWS region", hint="pass --region or set AWS_REGION")
    if isinstance(exc, BotoCoreError):
        return ImagekitError(f"{where}{exc}")
    return None


@contextmanager
def aws_errors_reported() -> Iterator[None]:
    """Around a command: botocore exceptions leave as ImagekitError (one line, a hint, an exit code)."""
    try:
        yield
    except ImagekitError:
        raise
    except Exception as exc:
        error = user_error(exc)
        if error is None:
            raise
        raise error from exc
