"""The lint rules' registry (imagekit/lint/rules.py) and the catalogue (lint/findings.py RULES) cannot drift:
every catalogued id has a rule that gives it, every id a rule declares is catalogued, and on the hostile
corpus (small images, read natively: no appliance) each rule gives only the ids it declares."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import pytest
from hostile_images import build_corpus

from imagekit.kernel.config import Target
from imagekit.lint import REGISTRY, RULES
from imagekit.lint.rules import LintContext, rules_for
from imagekit.lint.view import open_view
from imagekit.util.errors import UsageError


def test_every_catalogued_id_has_a_rule_and_every_declared_id_is_catalogued() -> None:
    declared = {rule_id for rule in REGISTRY for rule_id in rule.ids}
    assert set(RULES) - declared == set(), "catalogued, but no rule gives it"
    assert declared - set(RULES) == set(), "declared by a rule, but not in RULES"


def test_rules_have_unique_names_and_a_target() -> None:
    names = [rule.name for rule in REGISTRY]
    assert len(names) == len(set(names))
    assert all(rule.targets for rule in REGISTRY)
    facts = [fact for rule in REGISTRY for fact in rule.needs]
    assert all(isinstance(getattr(LintContext, fact, None), cached_property) for fact in facts)
    assert all(rule.gate or "disk-unreadable" not in rule.ids for rule in REGISTRY)  # only a gate ends lint
    assert all(rule_id in RULES for rule in REGISTRY for rule_id in rule.ids)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("corpus")
    (tmp / "sentinel").write_bytes(b"x" * 4096)
    base, variants = build_corpus(tmp, tmp / "sentinel")
    return [base, *(v.image for v in variants if v.fmt is None and v.image.suffix != ".qcow2")]


@pytest.mark.parametrize("target", list(Target))
def test_each_rule_gives_only_the_ids_it_declares(corpus: list[Path], target: Target) -> None:
    checked = 0
    for image in corpus:
        try:
            with open_view(image, reader="native") as view:
                ctx = LintContext(view, target, "x86_64", None)
                for rule in rules_for(target):
                    if rule.background:
                        continue  # GRUB 0.97 itself: test_lint.py and test_pvgrub_agrees.py run it
                    given = {f.rule for f in rule.check(ctx)}
                    assert given <= set(rule.ids), f"{image.name} {rule.name}: {given - set(rule.ids)}"
                    checked += 1
        except UsageError:  # --reader native cannot read it (none of these, today)
            continue
    assert checked
