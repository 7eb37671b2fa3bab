"""The AWS settings chain, as the AWS CLI has it, with real config files in a tmp dir.

region: --region, AWS_REGION, AWS_DEFAULT_REGION, the profile's region; profile: --profile, AWS_PROFILE.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.publish.awsconfig import Setting, resolve
from imagekit.util.errors import UsageError
from tests.publish.conftest import SparseImage

CONFIG = """\
[default]
region = ap-southeast-2

[profile dev]
region = eu-central-1

[profile noregion]
output = json
"""
CREDENTIALS = """\
[default]
aws_access_key_id = default-key
aws_secret_access_key = default-secret

[dev]
aws_access_key_id = dev-key
aws_secret_access_key = dev-secret

[noregion]
aws_access_key_id = nr-key
aws_secret_access_key = nr-secret
"""


@pytest.fixture
def aws_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A config and a credentials file of our own, and an environment with no AWS settings but those."""
    config, credentials = tmp_path / "config", tmp_path / "credentials"
    config.write_text(CONFIG)
    credentials.write_text(CREDENTIALS)
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return {"AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(credentials)}


@pytest.mark.parametrize(
    ("option", "env", "expected"),
    [
        ("us-west-1", {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-west-2", "AWS_PROFILE": "dev"},
         Setting("us-west-1", "--region")),
        (None, {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-west-2", "AWS_PROFILE": "dev"},
         Setting("eu-west-1", "AWS_REGION")),
        (None, {"AWS_DEFAULT_REGION": "us-west-2", "AWS_PROFILE": "dev"}, Setting("us-west-2", "AWS_DEFAULT_REGION")),
        (None, {"AWS_PROFILE": "dev"}, Setting("eu-central-1", "profile dev")),
        (None, {}, Setting("ap-southeast-2", "profile default")),
        (None, {"AWS_PROFILE": "noregion"}, Setting(None, "")),
    ],
)
def test_region_precedence(aws_files: dict[str, str], monkeypatch: pytest.MonkeyPatch, option: str | None,
                           env: dict[str, str], expected: Setting) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert resolve(region=option).region == expected


def test_profile_precedence_and_names(aws_files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "noregion")
    assert resolve(profile="dev").profile == Setting("dev", "--profile")
    assert resolve().profile == Setting("noregion", "AWS_PROFILE")
    assert resolve(profile="dev").region == Setting("eu-central-1", "profile dev")  # --profile's region, not env's
    with pytest.raises(UsageError, match=r"^--profile nosuch: no such AWS profile in .*config or .*credentials$"):
        resolve(profile="nosuch")
    monkeypatch.setenv("AWS_PROFILE", "nosuch")
    with pytest.raises(UsageError, match=r"^AWS_PROFILE=nosuch: no such AWS profile"):
        resolve()


def imagekit(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imagekit", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def regions_called(stdout: str) -> set[str]:
    return {line.split(" ")[0].split("[")[1].rstrip("]") for line in stdout.splitlines() if "[" in line}


def test_dry_run_honours_aws_region_and_the_profile(
    aws_files: dict[str, str], make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    """--dry-run resolves exactly as a real run: AWS_REGION over AWS_DEFAULT_REGION, the profile's region."""
    image = make_image("hvm")
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | aws_files
    args = ("publish", image.path, "--name", unique_name, "--dry-run", "--no-lint")

    by_profile = imagekit(*args, env={**base, "AWS_PROFILE": "dev"})
    assert by_profile.returncode == 0, by_profile.stderr
    assert regions_called(by_profile.stdout) == {"eu-central-1"}
    assert "region eu-central-1 (profile dev), profile dev (AWS_PROFILE)" in by_profile.stderr

    by_env = imagekit(*args, env={**base, "AWS_PROFILE": "dev", "AWS_REGION": "eu-west-1",
                                  "AWS_DEFAULT_REGION": "us-west-2"})
    assert by_env.returncode == 0, by_env.stderr
    assert regions_called(by_env.stdout) == {"eu-west-1"}

    by_option = imagekit(*args, "--region", "us-west-1", "--profile", "dev", env={**base, "AWS_REGION": "eu-west-1"})
    assert by_option.returncode == 0, by_option.stderr
    assert regions_called(by_option.stdout) == {"us-west-1"}
    assert "profile dev (--profile)" in by_option.stderr

    unknown = imagekit(*args, env={**base, "AWS_PROFILE": "nosuch"})
    assert unknown.returncode == 2, unknown.stderr
    assert unknown.stderr.startswith("error: AWS_PROFILE=nosuch: no such AWS profile"), unknown.stderr
    assert "None" not in unknown.stderr
