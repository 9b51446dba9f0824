"""sync.example.toml is the whole configuration reference, and checked: every setting with its default, secrets
named by their variable only. A key of the configuration file that is no setting stops start-up naming the closest
one; a SYNC_ variable that is no setting is named too (a warning)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from app.config_keys import unknown_config_keys, unknown_environment
from app.settings import DEFAULT_FIELD_POLICY, Settings

EXAMPLE = Path(__file__).resolve().parent.parent / "sync.example.toml"
HEADER = re.compile(r"^\[([A-Za-z0-9_.]+)\]\s*(?:#.*)?$")
# `key = value` or `# key = value`; prose comments never start with an identifier followed by "=".
ASSIGNMENT = re.compile(r"^(?P<hash>#\s*)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=(?P<value>.*)$")
Key = tuple[str, ...]  # a setting's path: ("log_level",), ("moodle", "url")


@dataclass(frozen=True)
class Assignment:
    section: Key
    key: str
    value: str  # the text after "=", an inline comment included
    commented: bool
    number: int  # 1-based line number, for the messages

    @property
    def path(self) -> Key:
        return (*self.section, self.key)

    @property
    def unset(self) -> bool:
        return is_unset(self.value)


def is_unset(value: str) -> bool:
    """`# key =` (nothing before an inline comment): the setting has no default."""
    return not value.split("#", 1)[0].strip()


def parse_example(text: str) -> tuple[list[Assignment], list[Key]]:
    """Every assignment, active or commented out, with its [section]; and the section headers in order."""
    assignments: list[Assignment] = []
    headers: list[Key] = []
    section: Key = ()
    for number, line in enumerate(text.splitlines(), 1):
        if header := HEADER.match(line):
            section = tuple(header[1].split("."))
            headers.append(section)
        elif match := ASSIGNMENT.match(line):
            assignments.append(Assignment(section, match["key"], match["value"], bool(match["hash"]), number))
    return assignments, headers


def setting_fields() -> dict[Key, FieldInfo]:
    """Every setting: the fields of Settings and of its section models, walked down to the values."""
    out: dict[Key, FieldInfo] = {}

    def walk(model: type[BaseModel], scope: Key) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, (*scope, name))
            else:
                out[(*scope, name)] = field

    walk(Settings, ())
    return out


def is_secret(field: FieldInfo) -> bool:
    return SecretStr in (field.annotation, *get_args(field.annotation))


def is_table_setting(field: FieldInfo) -> bool:
    """A dict-valued setting (users.fields): a [table] of its own whose keys are its entries, not settings."""
    return get_origin(field.annotation) is dict


def variable(path: Key) -> str:
    return "SYNC_" + "__".join(path).upper()


def uncommented(text: str) -> str:
    """The example with every commented-out `key = value` line made active (the `# key =` ones stay comments)."""
    lines = []
    for line in text.splitlines():
        match = ASSIGNMENT.match(line)
        if match and match["hash"] and not is_unset(match["value"]):
            line = line.removeprefix(match["hash"])
        lines.append(line)
    return "\n".join(lines) + "\n"


TEXT = EXAMPLE.read_text()
ASSIGNMENTS, HEADERS = parse_example(TEXT)
FIELDS = setting_fields()
TABLE_SETTINGS = {path for path, field in FIELDS.items() if is_table_setting(field)}


def in_table(a: Assignment) -> bool:
    """An entry of a dict-valued setting's table (`[users.fields] phone1`), not a setting."""
    return a.section in TABLE_SETTINGS


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SYNC_ variable of the environment (CI sets some), and no configuration file unless a test writes one."""
    for name in list(os.environ):
        if name.upper().startswith("SYNC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SYNC_CONFIG", str(tmp_path / "missing.toml"))


def use_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sync.toml"
    path.write_text(text)
    monkeypatch.setenv("SYNC_CONFIG", str(path))
    return path


# -- the reference -------------------------------------------------------------------------------------------


def test_the_parser_sees_active_and_commented_assignments() -> None:
    text = '# prose, not a key\ntop = 1\n[a]\n# b = "x"   # why\nc = [1]\n[a.d]\n# e =\n'
    assignments, headers = parse_example(text)
    assert headers == [("a",), ("a", "d")]
    assert [(a.path, a.commented, a.unset) for a in assignments] == [
        (("top",), False, False),
        (("a", "b"), True, False),
        (("a", "c"), False, False),
        (("a", "d", "e"), True, True),
    ]


def test_every_setting_is_in_the_example() -> None:
    documented = {a.path for a in ASSIGNMENTS} | set(HEADERS)
    missing = [".".join(path) for path, field in FIELDS.items() if not is_secret(field) and path not in documented]
    assert missing == [], f"not in {EXAMPLE.name}: {missing}"


def test_every_section_has_its_header() -> None:
    sections = {path[:-1] for path in FIELDS if len(path) > 1}
    assert sections - set(HEADERS) == set()


def test_secrets_are_named_by_their_variable_never_given() -> None:
    secrets = {path for path, field in FIELDS.items() if is_secret(field)}
    assert ("secret_key",) in secrets and ("moodle", "token") in secrets  # the walk found them
    unnamed = [variable(path) for path in secrets if variable(path) not in TEXT]
    assert unnamed == [], f"{EXAMPLE.name} does not name {unnamed}"
    given = [f"line {a.number}: {'.'.join(a.path)}" for a in ASSIGNMENTS if a.path in secrets]
    assert given == [], "a secret belongs in the environment, never in the file"


def test_every_key_in_the_example_is_a_setting() -> None:
    settings = {path for path, field in FIELDS.items() if not is_secret(field)}
    stale = [f"line {a.number}: {'.'.join(a.path)}" for a in ASSIGNMENTS if not in_table(a) and a.path not in settings]
    assert stale == []
    sections = {path[:-1] for path in FIELDS if len(path) > 1} | TABLE_SETTINGS
    assert [h for h in HEADERS if h not in sections] == []


def test_each_setting_once_and_one_convention() -> None:
    paths = [a.path for a in ASSIGNMENTS]
    assert len(paths) == len(set(paths)), "a key documented twice"
    active = [f"line {a.number}: {'.'.join(a.path)}" for a in ASSIGNMENTS if not a.commented]
    assert active == [], "every default is a commented-out line: a copy of the example changes nothing"


def test_the_users_fields_table_shows_every_field_with_its_default_policy() -> None:
    shown = {a.key: tomllib.loads(f"v ={a.value}")["v"] for a in ASSIGNMENTS if a.section == ("users", "fields")}
    assert shown == {name: policy.value for name, policy in DEFAULT_FIELD_POLICY.items()}


def test_a_key_without_a_value_is_a_setting_without_default() -> None:
    """`# key =` stands for "unset": only a setting whose default is None may be written so, and a setting whose
    default is None cannot be written otherwise (TOML has no null), which the next test checks by loading."""
    for a in ASSIGNMENTS:
        if a.unset:
            assert FIELDS[a.path].get_default(call_default_factory=True) is None, f"line {a.number}: {a.key}"


def test_every_value_line_is_valid_toml() -> None:
    """A typo (an unquoted string) would otherwise be silently left out of the check of the defaults."""
    for a in ASSIGNMENTS:
        if not a.unset:
            tomllib.loads(f"{a.key} ={a.value}")


# Compared apart (see below): users.fields, whose default {} means "no override of DEFAULT_FIELD_POLICY".
EXCLUDED: dict[str, Any] = {"users": {"fields"}}


def test_the_example_uncommented_loads_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    defaults = Settings()
    text = uncommented(TEXT)
    # Not vacuous: every setting with a default is active in it.
    active = {a.path for a in parse_example(text)[0] if not a.commented and not in_table(a)}
    with_default = {
        path
        for path, field in FIELDS.items()
        if not is_secret(field)
        and not is_table_setting(field)
        and field.get_default(call_default_factory=True) is not None
    }
    assert active == with_default
    path = use_config(monkeypatch, tmp_path, text)
    assert unknown_config_keys(path) == []
    loaded = Settings()
    assert loaded.model_dump(exclude=EXCLUDED) == defaults.model_dump(exclude=EXCLUDED)
    # users.fields: the example lists the effective policy of every field (DEFAULT_FIELD_POLICY), while the
    # setting's own default is {} (no override); what counts is that every field keeps its default policy.
    for field in DEFAULT_FIELD_POLICY:
        assert loaded.users.policy(field) is defaults.users.policy(field)
    assert set(loaded.users.fields) == set(DEFAULT_FIELD_POLICY)


def test_the_example_as_it_is_changes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    defaults = Settings()
    path = use_config(monkeypatch, tmp_path, TEXT)
    assert Settings().model_dump() == defaults.model_dump()
    assert unknown_config_keys(path) == []


def test_example_lines_fit_in_120_characters() -> None:
    long = [n for n, line in enumerate(TEXT.splitlines(), 1) if len(line) >= 120]
    assert long == []


# -- unknown keys in the configuration file --------------------------------------------------------------------


def refusals(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> tuple[Path, list[str]]:
    """The problems of a file (mode "test": no required secret, so only the file's)."""
    path = use_config(monkeypatch, tmp_path, text)
    return path, Settings(mode="test").problems()


def test_a_misspelt_key_is_refused_naming_the_closest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path, problems = refusals(monkeypatch, tmp_path, "[courses]\ncategroy_field_id = 8620\n")
    assert problems == [f"unknown setting [courses] categroy_field_id in {path}; did you mean category_field_id?"]


def test_the_production_checks_stay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = use_config(monkeypatch, tmp_path, "[courses]\ncategroy_field_id = 8620\n")
    problems = Settings().problems()
    assert any("SYNC_SECRET_KEY" in p for p in problems) and any("categroy_field_id" in p for p in problems)
    assert str(path) in problems[-1]


def test_an_unknown_section_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path, problems = refusals(monkeypatch, tmp_path, "[corses]\nauto_create = false\n[users.feilds]\n")
    assert problems == [
        f"unknown section [corses] in {path}; did you mean [courses]?",
        f"unknown section [users.feilds] in {path}; did you mean [users.fields]?",
    ]


def test_an_unknown_top_level_key_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path, problems = refusals(monkeypatch, tmp_path, 'log_levle = "DEBUG"\nnothing_like_it = 1\n')
    assert problems == [
        f"unknown setting log_levle in {path}; did you mean log_level?",
        f"unknown setting nothing_like_it in {path}",
    ]


def test_a_key_in_the_wrong_section_is_pointed_to_its_own(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The TOML trap: a top-level key written at the end of the file belongs to the last [section]."""
    text = '[jobs]\nlease_seconds = 60\nlog_level = "DEBUG"\n[moodle]\nmax_body_bytes = 10\n'
    path, problems = refusals(monkeypatch, tmp_path, text)
    assert problems == [
        f"unknown setting [jobs] log_level in {path}; log_level is a top-level setting: "
        "write it above the first [section]",
        f"unknown setting [moodle] max_body_bytes in {path}; did you mean [api] max_body_bytes?",
    ]


def test_a_valid_file_gives_no_problem(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = (
        'log_level = "DEBUG"\n[moodle]\nurl = "https://lms.example.org"\nmax_batch = 50\n'
        "[courses]\ncategory_field_id = 8620\nscheduled_status_ids = [1, 3]\n"
        '[users]\nadopt_auths = ["manual"]\n[users.fields]\nphone1 = "locked"\nemail = "unlocked_if_empty"\n'
    )
    _, problems = refusals(monkeypatch, tmp_path, text)
    assert problems == []
    s = Settings()
    assert (s.log_level, s.moodle.max_batch, s.courses.category_field_id) == ("DEBUG", 50, 8620)


def test_users_fields_entries_are_not_settings_to_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = '[users.fields]\nfirstname = "unlocked"\nlastname = "unlocked"\nemail = "locked"\nphone1 = "locked"\n'
    assert refusals(monkeypatch, tmp_path, text)[1] == []
    # Their names are checked by the setting itself: an unknown field stops loading.
    use_config(monkeypatch, tmp_path, '[users.fields]\nphone2 = "locked"\n')
    with pytest.raises(ValueError, match="unknown user field"):
        Settings()


def test_key_case_as_loading_sees_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Loading matches top-level keys and section names whatever their case, not the keys inside a section."""
    assert refusals(monkeypatch, tmp_path, 'LOG_LEVEL = "DEBUG"\n[Moodle]\nurl = "https://x"\n')[1] == []
    assert (Settings().log_level, Settings().moodle.url) == ("DEBUG", "https://x")
    path, problems = refusals(monkeypatch, tmp_path, '[moodle]\nURL = "x"\n')
    assert Settings().moodle.url == ""
    assert problems == [f"unknown setting [moodle] URL in {path}; did you mean url?"]


def test_start_up_stops_on_an_unknown_key(tmp_path: Path) -> None:
    config = tmp_path / "sync.toml"
    config.write_text("[courses]\ncategroy_field_id = 8620\n")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SYNC_")}
    env.update(SYNC_MODE="test", SYNC_VAR_DIR=str(tmp_path), SYNC_CONFIG=str(config))
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "categroy_field_id" in done.stderr and "category_field_id" in done.stderr, done.stderr


# -- unknown SYNC_ variables -------------------------------------------------------------------------------------


def test_an_unknown_variable_is_named_with_the_closest() -> None:
    environ = {
        "SYNC_MOODLE__TOKN": "x",
        "SYNC_CONFIG": "x",
        "SYNC_TEST_DATABASE_URL": "x",
        "SYNC_USERS__FIELDS__PHONE1": "locked",
    }
    assert unknown_environment(environ) == ["SYNC_MOODLE__TOKN is not a setting; did you mean SYNC_MOODLE__TOKEN?"]


def test_every_setting_variable_is_known() -> None:
    sections = {variable(path[:-1]) for path in FIELDS if len(path) > 1}  # a whole section as JSON
    names = [variable(path) for path in FIELDS] + sorted(sections)
    others = ["SYNC_SECRETS_DIR", "SYNC_BENCH_SCALE", "sync_moodle__url", "PATH", "MY_SYNC_X"]
    assert unknown_environment(dict.fromkeys([*names, *others], "x")) == []


def test_common_mistakes_are_named() -> None:
    environ = dict.fromkeys(["SYNC_MOODLE_TOKEN", "SYNC_USERS__FIELD__PHONE1", "sync_log_levl", "SYNC_NOTHING"], "x")
    assert unknown_environment(environ) == [
        "SYNC_MOODLE_TOKEN is not a setting; did you mean SYNC_MOODLE__TOKEN?",
        "SYNC_NOTHING is not a setting",
        "SYNC_USERS__FIELD__PHONE1 is not a setting; did you mean SYNC_USERS__FIELDS?",
        "sync_log_levl is not a setting; did you mean SYNC_LOG_LEVEL?",
    ]


def test_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert unknown_environment() == []
    monkeypatch.setenv("SYNC_API__TOKN", "x")
    assert unknown_environment() == ["SYNC_API__TOKN is not a setting; did you mean SYNC_API__TOKEN?"]
