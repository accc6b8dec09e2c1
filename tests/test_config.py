"""Settings: one bad key or value is skipped alone and reported; the rest still applies."""

from __future__ import annotations

from pathlib import Path

import pytest

from mncd.config import Config


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return Config.load(path)


def test_no_file_is_the_defaults_without_a_problem(tmp_path):
    config = Config.load(tmp_path / "missing.toml")
    assert config.problems == [] and config.pinentry == "pinentry"
    assert config.thresholds == (30, 7, 1) and all(config.notify.values())


def test_one_unknown_key_leaves_every_other_setting_in_force(tmp_path):
    config = load(
        tmp_path,
        '[notifications]\nexpiry = false\ncolour = "red"\nthresholds = [60, 14]\n'
        '[pinentry]\nprogram = "pinentry-gnome3"\n',
    )
    assert config.notify["expiry"] is False
    assert config.thresholds == (60, 14)
    assert config.pinentry == "pinentry-gnome3"
    assert config.problems == ["unknown setting notifications.colour ignored"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[notifications]\nexpiry = 1\n", "notifications.expiry must be true or false; using true"),
        ("[notifications]\nthresholds = [0]\n", "notifications.thresholds must be a list of days"),
        ("[notifications]\nthresholds = [true]\n", "notifications.thresholds must be a list"),
        ("[notifications]\nthresholds = []\n", "notifications.thresholds must be a list"),
        ('[pinentry]\nprogram = ""\n', "pinentry.program must be a program name"),
        ("[pinentry]\nprogram = 3\n", "pinentry.program must be a program name"),
        ("[pinentry]\ntimeout = 3\n", "unknown setting pinentry.timeout ignored"),
        ("[colours]\nx = 1\n", "unknown section [colours] ignored"),
        ("notifications = 3\n", "notifications must be a section"),
    ],
)
def test_a_bad_value_keeps_the_default_and_says_so(tmp_path, text, problem):
    config = load(tmp_path, text + '[pinentry]\nprogram = "pinentry-qt"\n'
                  if "[pinentry]" not in text else text)  # fmt: skip
    assert len(config.problems) == 1 and config.problems[0].startswith(problem)
    defaults = Config()
    assert config.thresholds == defaults.thresholds and config.notify == defaults.notify
    if "[pinentry]" not in text:
        assert config.pinentry == "pinentry-qt"  # the good setting beside the bad one


def test_a_file_that_is_not_toml_gives_the_defaults_and_one_problem(tmp_path):
    config = load(tmp_path, "[notifications\nexpiry = false\n")
    assert config.notify["expiry"] is True
    assert len(config.problems) == 1 and "cannot be read" in config.problems[0]


def test_problems_are_logged(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="mncd.config"):
        load(tmp_path, "[notifications]\nsound = true\n")
    assert "settings: unknown setting notifications.sound ignored" in caplog.text
