"""Task references and version keys (core/versions.py, config.version_key): every layer reads `@` alike."""

from __future__ import annotations

import pytest

from continual_adapters.core.config import TaskSpec, validate_task_key, version_key
from continual_adapters.core.errors import ConfigError
from continual_adapters.core.versions import CURRENT, TaskRef, parse_reference, split_key, validate_alias


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("sst2", TaskRef("sst2")),
        ("sst2@1", TaskRef("sst2", version=1)),
        ("sst2@12", TaskRef("sst2", version=12)),
        ("sst2@production", TaskRef("sst2", alias="production")),
        ("sst2@current", TaskRef("sst2", alias=CURRENT)),
    ],
)
def test_references_parse_and_print_back(ref, parsed):
    assert parse_reference(ref) == parsed and str(parsed) == ref


def test_only_a_bare_name_or_current_means_the_current_version():
    assert parse_reference("sst2").current and parse_reference("sst2@current").current
    assert not parse_reference("sst2@1").current and not parse_reference("sst2@prod").current


@pytest.mark.parametrize("ref", ["", "sst2@", "sst2@0", "sst2@01", "sst2@-1", "Sst2@1", "sst2@1@2", "sst2@Prod", "@2"])
def test_malformed_references_are_config_errors(ref):
    with pytest.raises(ConfigError):
        parse_reference(ref)


def test_version_keys_keep_version_one_bare_and_split_back():
    assert version_key("sst2", 1) == "sst2" and version_key("sst2", 3) == "sst2@3"
    assert split_key("sst2") == ("sst2", 1) and split_key("sst2@3") == ("sst2", 3)
    assert validate_task_key("sst2@2") == "sst2@2"
    for bad in ("sst2@1", "sst2@prod", "sst2@02", "auto"):
        with pytest.raises(ConfigError):
            validate_task_key(bad)


def test_a_later_version_key_names_a_task_spec_but_not_a_new_task():
    assert TaskSpec("sst2@2", labels=("neg", "pos")).name == "sst2@2"
    with pytest.raises(ConfigError):
        TaskSpec("sst2@prod", labels=("neg", "pos"))


def test_aliases_start_with_a_letter_and_current_is_reserved():
    assert validate_alias("production") == "production"
    for bad in ("2", "current", "Prod", "-x", "a" * 65):
        with pytest.raises(ConfigError):
            validate_alias(bad)
