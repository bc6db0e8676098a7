"""A version's rules parsed once per process (``programs.rules.version_rules``, issue 15): a saved ProgramVersion
never changes, so its parsed ``RuleSet`` is remembered by its row; an unsaved one is parsed from its document each
time; a document that does not parse raises each time and is not remembered; two workspaces' versions are apart."""

from __future__ import annotations

import pytest

from programs import rules
from programs.models import ProgramVersion
from tests.factories import ProgramFactory, ProgramVersionFactory

DOC = {
    "schema_version": 1,
    "currency": "USD",
    "referrer": [{"kind": "flat_per_conversion", "amount_minor": 5_000}],
    "referred": [],
}
OTHER = {
    "schema_version": 1,
    "currency": "USD",
    "referrer": [{"kind": "flat_per_conversion", "amount_minor": 7_000}],
    "referred": [],
}


@pytest.fixture
def parses(monkeypatch):
    calls = []
    real = rules._parse

    def counted(document):
        calls.append(document)
        return real(document)

    monkeypatch.setattr(rules, "_parse", counted)
    monkeypatch.setattr(rules, "_PARSED", {})
    monkeypatch.setattr(rules, "_BY_VERSION", {})
    return calls


@pytest.mark.django_db
def test_a_saved_version_is_parsed_once_and_read_again_by_its_row(world, parses, monkeypatch):
    version = ProgramVersionFactory(program=ProgramFactory(tenant=world.a), number=1, rules=DOC)
    first = rules.version_rules(version)
    again = rules.version_rules(ProgramVersion.objects.get(pk=version.pk))  # another instance of the same row
    assert again is first and first == rules.parse_rules(DOC)
    assert len(parses) == 1
    # Read by its row, the document is not turned into canonical JSON again.
    monkeypatch.setattr(rules.json, "dumps", lambda *a, **k: pytest.fail("the document was serialised again"))
    assert rules.version_rules(version) is first


@pytest.mark.django_db
def test_two_workspaces_versions_and_an_unsaved_one_are_not_mixed_up(world, parses):
    mine = ProgramVersionFactory(program=ProgramFactory(tenant=world.a), number=1, rules=DOC)
    theirs = ProgramVersionFactory(program=ProgramFactory(tenant=world.b), number=1, rules=OTHER)
    assert rules.version_rules(mine).referrer[0].amount_minor == 5_000
    assert rules.version_rules(theirs).referrer[0].amount_minor == 7_000
    unsaved = ProgramVersion(tenant=world.a, program=mine.program, number=2, rules=OTHER)
    assert rules.version_rules(unsaved).referrer[0].amount_minor == 7_000
    unsaved.rules = DOC  # unsaved: read from its document each time
    assert rules.version_rules(unsaved).referrer[0].amount_minor == 5_000


@pytest.mark.django_db
def test_rules_that_do_not_parse_raise_each_time(world, parses):
    version = ProgramVersionFactory(program=ProgramFactory(tenant=world.a), number=1, rules={"referrer": "nonsense"})
    for _ in range(2):
        with pytest.raises(rules.RulesError):
            rules.version_rules(version)
    assert len(parses) == 2
    assert rules._BY_VERSION == {}
