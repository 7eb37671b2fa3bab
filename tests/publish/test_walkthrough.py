"""Issue 15 item 7: docs/publish.md's local-cloud walkthrough runs as written, with the real AWS CLI.

The walkthrough is docs/local-cloud-rehearsal.sh, included verbatim in the doc (checked here), run by
bash -eu against a fresh `imagekit local-cloud` on 127.0.0.1 with a small sparse image."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.publish.conftest import FAKE_ENV, SparseImage, serve_local_cloud

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docs" / "local-cloud-rehearsal.sh"


def test_the_doc_shows_the_walkthrough_verbatim() -> None:
    doc = (REPO / "docs" / "publish.md").read_text()
    assert f"```sh\n{SCRIPT.read_text()}```\n" in doc
    assert (REPO / "docs" / "vmimport-trust-policy.json").is_file()


@pytest.mark.slow  # the AWS CLI's start-up, a dozen times: about a minute; the doc check above stays fast
def test_the_walkthrough_runs_with_the_aws_cli(make_image: Callable[..., SparseImage], unique_name: str,
                                              tmp_path: Path) -> None:
    image = make_image("pv")
    bin_dir = str(Path(sys.executable).parent)  # imagekit and aws, as `. .venv/bin/activate` puts them on PATH
    env = {**os.environ, **FAKE_ENV, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("AWS_DEFAULT_REGION")  # the walkthrough sets it
    env["IMAGEKIT_LOCALCLOUD_COPY_SECONDS"] = "0.5"
    with serve_local_cloud(env, "--import-seconds", "1") as url:
        run_env = {**env, "AWS_ENDPOINT_URL": url, "IMAGE": str(image.path), "NAME": unique_name,
                   "FLAGS": "--no-lint", "IMAGEKIT_PUBLISHED": str(tmp_path / "published.json")}
        proc = subprocess.run(["bash", "-eu", "-o", "pipefail", SCRIPT], cwd=REPO, env=run_env,
                              capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    amis = [line.split("\t") for line in out if line.startswith(("us-east-1\t", "eu-west-1\t", "us-west-2\t"))]
    first, again = amis[:3], amis[3:6]
    assert [r for r, _ in first] == ["us-east-1", "eu-west-1", "us-west-2"] and first == again
    registered = next(line for line in out if line.startswith(first[0][1]))
    assert registered.split("\t")[1:] == ["paravirtual", "aki-5c21674b", "/dev/sda1"]
    assert '"Location": "/rehearsal-images"' in proc.stdout  # aws s3api create-bucket
    assert '"RoleName": "vmimport"' in proc.stdout  # aws iam create-role
    assert out[-1].startswith("us-east-1\tami-"), proc.stdout  # the import-snapshot publish
    assert "Traceback" not in proc.stderr
