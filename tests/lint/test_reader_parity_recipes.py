"""Both readers on every shipped recipe's image the suite builds (session fixture `recipe_images`, shared
with tests/boot and tests/image): the same findings for every target, one libguestfs launch per image."""

from __future__ import annotations

import pytest
from parity import assert_readers_agree

pytestmark = pytest.mark.slow

# (recipe, --layout or None): the images tests/boot and tests/image already build; LVM is read by libguestfs
BUILT = [("debian-12-pvgrub-hd0", None), ("debian-12-pvgrub-hd00", None), ("debian-12-pvgrub-hd00-bootpart", None),
         ("debian-12-hvm-bios", None), ("debian-12-hvm-uefi", None), ("debian-12-hvm-hybrid", None),
         ("debian-12-postgres-datavol", None), ("debian-12-postgres-datavol", "gpt-uefi"),
         ("kumina-bootstrap", None), ("debian-12-lvm", None)]


@pytest.mark.parametrize(("recipe", "layout"), BUILT, ids=[f"{r}{'.' + lay if lay else ''}" for r, lay in BUILT])
def test_readers_agree_on_recipe_image(recipe_images, recipe: str, layout: str | None) -> None:
    assert_readers_agree(recipe_images(recipe, layout), native=recipe != "debian-12-lvm")
