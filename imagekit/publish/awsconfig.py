"""AWS settings resolved once, the way the AWS CLI resolves them, for every command that talks to AWS.

    region    --region, then AWS_REGION, then AWS_DEFAULT_REGION, then the profile's `region`
    profile   --profile, then AWS_PROFILE, then none (botocore's default profile)
    endpoint  --endpoint-url, then botocore's own (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>,
              the profile's endpoint_url)

botocore alone reads AWS_DEFAULT_REGION and the profile but not AWS_REGION, which the AWS CLI v2 and
the other SDKs put first; `resolve` puts it where the CLI does. Each setting keeps where it came from,
so a message can say `AWS_PROFILE=dev` instead of a `--profile` the user never typed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagekit.util.errors import UsageError

REGION_SOURCES = ("AWS_REGION", "AWS_DEFAULT_REGION")


@dataclass(frozen=True)
class Setting:
    value: str | None
    source: str  # "--region", "AWS_REGION", "profile dev", "" when unset

    def __str__(self) -> str:
        if self.value is None:
            return "unset"
        return f"{self.value} ({self.source})" if self.source else self.value

    @property
    def named(self) -> str:
        """How a message names it: `--profile dev`, `AWS_PROFILE=dev`."""
        if self.source.startswith("--"):
            return f"{self.source} {self.value}"
        return f"{self.source}={self.value}" if self.source else str(self.value)


UNSET = Setting(None, "")


@dataclass(frozen=True)
class AwsConfig:
    region: Setting
    profile: Setting = UNSET
    endpoint_url: Setting = UNSET  # AWS_ENDPOINT_URL is shown, but left to botocore (AWS_ENDPOINT_URL_EC2 beats it)

    @property
    def endpoint_override(self) -> str | None:
        """The endpoint to pass to every client: --endpoint-url only."""
        return self.endpoint_url.value if self.endpoint_url.source == "--endpoint-url" else None

    def session(self) -> Any:
        """A boto3 session for the profile (its region is not used: clients get `region` explicitly)."""
        import boto3

        return boto3.session.Session(profile_name=self.profile.value)


def _given(option: str, value: str | None) -> Setting | None:
    return Setting(value, option) if value else None


def resolve_profile(profile: str | None, env: Mapping[str, str]) -> Setting:
    chosen = _given("--profile", profile) or _given("AWS_PROFILE", env.get("AWS_PROFILE")) or UNSET
    if chosen.value is not None:
        check_profile(chosen, env)
    return chosen


def config_files(env: Mapping[str, str]) -> tuple[str, str]:
    config = env.get("AWS_CONFIG_FILE") or "~/.aws/config"
    credentials = env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    return config, credentials


def check_profile(profile: Setting, env: Mapping[str, str]) -> None:
    """ProfileNotFound as a usage error naming the profile, where it came from, and the files read."""
    import botocore.session
    from botocore.exceptions import ProfileNotFound

    try:
        botocore.session.Session(profile=profile.value).get_scoped_config()
    except ProfileNotFound:
        config, credentials = config_files(env)
        raise UsageError(
            f"{profile.named}: no such AWS profile in {config} or {credentials}",
            hint=f"`aws configure list-profiles` lists the profiles; `aws configure --profile {profile.value}` "
            "creates it",
        ) from None


def profile_region(profile: Setting) -> str | None:
    """The `region` of the profile's section in the config file (None when it has none)."""
    import botocore.session

    region = botocore.session.Session(profile=profile.value).get_scoped_config().get("region")
    return str(region) if region else None


def resolve_region(region: str | None, profile: Setting, env: Mapping[str, str]) -> Setting:
    given = _given("--region", region)
    if given is not None:
        return given
    for name in REGION_SOURCES:
        if env.get(name):
            return Setting(env[name], name)
    from_profile = profile_region(profile)
    if from_profile:
        return Setting(from_profile, f"profile {profile.value or 'default'}")
    return UNSET


def resolve(
    region: str | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> AwsConfig:
    """The settings a command runs with; options first, then the environment, then the profile."""
    env = os.environ if env is None else env
    chosen_profile = resolve_profile(profile, env)
    return AwsConfig(
        region=resolve_region(region, chosen_profile, env),
        profile=chosen_profile,
        endpoint_url=_given("--endpoint-url", endpoint_url) or _given("AWS_ENDPOINT_URL", env.get("AWS_ENDPOINT_URL"))
        or UNSET,
    )


def require_region(config: AwsConfig) -> str:
    if config.region.value is None:
        raise UsageError(
            "no AWS region: none of --region, AWS_REGION, AWS_DEFAULT_REGION or the profile's region is set",
            hint="pass --region us-east-1 (or set AWS_REGION, or `aws configure set region ...`)",
        )
    return config.region.value


def known_regions() -> frozenset[str]:
    """Every EC2 region of every partition in botocore's endpoint data (offline; as new as botocore)."""
    import botocore.session

    session = botocore.session.get_session()
    return frozenset(
        region for partition in session.get_available_partitions()
        for region in session.get_available_regions("ec2", partition)
    )


def check_region(option: str, region: str) -> None:
    """Refuse a region EC2 does not have (a typo such as eu-west-9), naming the nearest real ones."""
    import difflib

    known = known_regions()
    if region in known:
        return
    import botocore

    near = sorted(difflib.get_close_matches(region, sorted(known), n=3, cutoff=0.6))
    listed = ", ".join(near[:-1]) + f" or {near[-1]}" if len(near) > 1 else "".join(near)
    hint = f"did you mean {listed}? " if near else "`aws ec2 describe-regions` lists them; "
    raise UsageError(
        f"{option} {region}: not an EC2 region (botocore {botocore.__version__}'s endpoint data has no {region})",
        hint=hint + "a region newer than botocore needs a newer boto3",
    )
