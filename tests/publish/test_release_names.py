"""A release's AMI names (publish/release.py): `{arch}` filled per image, required for two arches, one per arch."""

from __future__ import annotations

import pytest

from imagekit.publish.release import release_names
from imagekit.util.errors import UsageError


def test_names_fill_the_arch() -> None:
    assert release_names("debian-12-{arch}-20270101", ["x86_64", "arm64"]) == [
        "debian-12-x86_64-20270101", "debian-12-arm64-20270101"]


def test_single_image_name_unchanged() -> None:
    assert release_names("debian-12-20270101", ["x86_64"]) == ["debian-12-20270101"]


def test_two_arches_need_the_placeholder() -> None:
    with pytest.raises(UsageError, match=r"--name 'debian-12': the images are x86_64 and arm64; .*\{arch\}"):
        release_names("debian-12", ["x86_64", "arm64"])


def test_two_images_of_one_arch_refused() -> None:
    with pytest.raises(UsageError, match="images 1 and 2 are both arm64"):
        release_names("d-{arch}", ["arm64", "arm64"])
