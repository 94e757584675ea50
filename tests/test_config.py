"""cowork.toml: defaults, COWORK_* overrides, located errors."""
from __future__ import annotations

import tomllib

import pytest

from cowork.config import TeamSettings, api_key_for, load_settings
from cowork.errors import ValidationFailed


def write(tmp_path, text: str):
    path = tmp_path / "cowork.toml"
    path.write_text(text)
    return path


def problems(path, env=None):
    with pytest.raises(ValidationFailed) as info:
        load_settings(path, env=env or {}, display="cowork.toml")
    return info.value.problems


def test_an_empty_file_gives_the_defaults(tmp_path):
    settings = load_settings(write(tmp_path, ""), env={})
    assert settings == TeamSettings()
    assert settings.concurrency == 4 and settings.merge.target == "main" and settings.model.name is None


def test_values_and_env_overrides(tmp_path):
    path = write(tmp_path, 'name = "acme"\nconcurrency = 2\n[model]\nname = "openai/gpt-4o"\napi_key_env = "OPENAI_API_KEY"\n')
    settings = load_settings(path, env={})
    assert (settings.name, settings.concurrency, settings.model.name) == ("acme", 2, "openai/gpt-4o")
    env = {"COWORK_MODEL": "ollama/qwen", "COWORK_CONCURRENCY": "7", "COWORK_API_BASE": "http://127.0.0.1:9",
           "COWORK_MERGE_TARGET": "trunk"}
    over = load_settings(path, env=env)
    assert (over.model.name, over.concurrency, over.model.api_base, over.merge.target) == (
        "ollama/qwen", 7, "http://127.0.0.1:9", "trunk")
    assert over.model.api_key_env == "OPENAI_API_KEY"


def test_api_key_comes_from_the_named_variable_or_cowork_api_key(tmp_path):
    settings = load_settings(write(tmp_path, '[model]\napi_key_env = "MY_KEY"\n'), env={})
    assert api_key_for(settings.model, {"MY_KEY": "k1"}) == "k1"
    assert api_key_for(settings.model, {"MY_KEY": "k1", "COWORK_API_KEY": "k2"}) == "k2"
    assert api_key_for(settings.model, {}) is None


def test_bad_toml_names_the_line(tmp_path):
    [p] = problems(write(tmp_path, 'name = "x"\n\n[model\nname = "y"\n'))
    assert p.file == "cowork.toml" and p.line == 3 and "invalid TOML" in p.message


def test_unknown_key_names_line_and_field(tmp_path):
    [p] = problems(write(tmp_path, 'name = "x"\n\n[merge]\ntarget = "main"\ntargte = "dev"\n'))
    assert (p.line, p.field, p.message) == (5, "merge.targte", "unknown key 'targte'")
    assert p.render().startswith("cowork.toml:5: merge.targte: unknown key")


def test_wrong_types_are_each_reported(tmp_path):
    found = problems(write(tmp_path, 'concurrency = "many"\n[budget]\nwrap_up_at = 3\n'))
    by_field = {p.field: p for p in found}
    assert set(by_field) == {"concurrency", "budget.wrap_up_at"}
    assert by_field["concurrency"].line == 1 and by_field["budget.wrap_up_at"].line == 3


def test_an_mcp_server_without_a_command_or_with_a_bad_timeout_is_reported_at_load(tmp_path):
    found = problems(write(tmp_path, '[mcp.empty]\ncommand = []\n[mcp.slow]\ncommand = ["srv"]\ntimeout_s = 0\n'))
    assert {(p.field, p.line) for p in found} == {("mcp.empty.command", 2), ("mcp.slow.timeout_s", 5)}


def test_a_bad_env_override_is_reported(tmp_path):
    [p] = problems(write(tmp_path, ""), env={"COWORK_CONCURRENCY": "0"})
    assert p.field == "concurrency"


def test_missing_file(tmp_path):
    [p] = problems(tmp_path / "cowork.toml")
    assert p.message == "file not found" and "cowork init" in p.hint


@pytest.mark.parametrize("table, key, value", [
    ("budget", "usd_per_task", "-5"), ("budget", "usd_per_day", "-0.5"), ("budget", "tokens_per_task", "-1"),
    ("budget", "tokens_per_day", "-1"), ('prices."ollama/qwen"', "input_per_mtok", "-1"),
    ("model", "timeout_s", "0"), ("merge", "lease_s", "-60"), ("policy", "approval_timeout_s", "0"),
    ("policy", "max_lanes_per_task", "0"), ("policy", "max_delegation_depth", "-1"),
    ("policy", "max_check_retries", "-1"), ("policy", "max_conflict_returns", "-1"),
    ("policy", "max_steps_per_lane", "0"), ("policy", "max_consecutive_failures", "0"),
    ("policy", "max_repeated_calls", "1"), ("policy", "ask_timeout_s", "-1"), ("policy", "run_timeout_s", "0"),
])
def test_caps_counts_and_timeouts_out_of_range_are_located(tmp_path, table, key, value):
    [p] = problems(write(tmp_path, f'name = "x"\n[{table}]\n{key} = {value}\n'))
    assert p.field.endswith(key) and p.line == 3 and "greater than" in p.message, p.render()


def test_zero_caps_are_allowed_as_in_a_role_budget(tmp_path):
    settings = load_settings(write(tmp_path, "[budget]\nusd_per_task = 0\ntokens_per_day = 0\n"
                                             "[policy]\nmax_delegation_depth = 0\nmax_check_retries = 0\n"), env={})
    assert settings.budget.usd_per_task == 0 and settings.policy.max_delegation_depth == 0


def test_errors_in_prices_and_mcp_tables_name_the_line_of_their_key_or_table(tmp_path):
    found = problems(write(tmp_path, 'name = "x"\n[mcp.gh]\ntimeout_s = 3\n'
                                     '[prices."openai/gpt-4o"]\ninput_per_mtok = "x"\n'
                                     "[prices]\n'local/m' = { input_per_mtok = -1 }\n"))
    assert {(p.field, p.line) for p in found} == {
        ("mcp.gh.command", 2), ("prices.openai/gpt-4o.input_per_mtok", 5), ("prices.local/m.input_per_mtok", 7)}


def test_lines_inside_multiline_values_are_not_taken_for_keys(tmp_path):
    text = ('[merge]\nchecks = [\n  "ls",\n  # target = 1\n]\nnote = """\n[policy]\nauto = 1\n"""\n'
            '[policy]\nauto = 1\n')
    found = problems(write(tmp_path, text))
    assert {(p.field, p.line) for p in found} == {("merge.note", 6), ("policy.auto", 11)}


def test_every_key_of_the_starter_cowork_toml_is_located():
    from cowork import tomlpos
    from cowork.init import template_files

    text = next(body for path, body in template_files().items() if path == "cowork.toml")
    text = text.replace("__TEAM_NAME__", '"t"').replace("__TARGET__", '"main"')
    spots, lines = tomlpos.positions(text), text.splitlines()

    def walk(node: dict, path: tuple) -> None:
        for key, value in node.items():
            spot = spots[path + (key,)]
            assert key in lines[spot.line - 1], (path + (key,), lines[spot.line - 1])
            if isinstance(value, dict):
                walk(value, path + (key,))

    walk(tomllib.loads(text), ())


def test_a_key_appended_after_mcp_or_prices_says_it_landed_in_that_table(tmp_path):
    found = problems(write(tmp_path, 'name = "x"\n[merge]\nauto = true\n[prices]\n[mcp]\n\ncolour = "blue"\n'
                                     "concurrency = 2\n"))
    by_field = {p.field: p for p in found}
    colour, concurrency = by_field["mcp.colour"], by_field["mcp.concurrency"]
    assert (colour.line, concurrency.line) == (7, 8)
    assert colour.message == "`colour` is not an MCP server table; a key written after [mcp] belongs to that table"
    assert "[mcp.colour] with command" in colour.hint and "above the first [table] (line 2)" in colour.hint
    assert concurrency.hint == "move `concurrency` above the first [table] (line 2)"
    [p] = problems(write(tmp_path, '[prices."openai/gpt-4o"]\ninput_per_mtok = 1.0\n[prices]\nplanner = "lead"\n'))
    assert (p.line, p.message) == (4, "`planner` is not a price table; a key written after [prices] belongs to that table")


def test_a_top_level_key_after_another_table_is_named_as_misplaced(tmp_path):
    found = problems(write(tmp_path, '[mcp.gh]\ncommand = ["gh-mcp"]\nconcurrency = 2\n'
                                     '[policy.approvals]\nrun = "notify"\nplanner = "lead"\n'))
    assert {(p.line, p.field, p.message, p.hint) for p in found} == {
        (3, "mcp.gh.concurrency", "`concurrency` is a top-level key, but a key written after [mcp.gh] belongs to "
         "that table", "move `concurrency` above the first [table] (line 1)"),
        (6, "policy.approvals.planner", "`planner` is a top-level key, but a key written after [policy.approvals] "
         "belongs to that table", "move `planner` above the first [table] (line 1)")}
    [p] = problems(write(tmp_path, '[model]\nname = 5\n'))
    assert p.field == "model.name" and "valid string" in p.message and p.hint is None


def test_a_bad_env_override_names_its_variable_not_a_line_of_the_file(tmp_path):
    [p] = problems(write(tmp_path, 'name = "x"\n\nconcurrency = 2\n'), env={"COWORK_CONCURRENCY": "-1"})
    assert p.field == "concurrency" and p.line is None and p.file != "cowork.toml"
    assert "COWORK_CONCURRENCY" in p.render() and "cowork.toml:3" not in p.render(), p.render()
    assert "greater than" in p.message


@pytest.mark.parametrize("table, key", [
    ("policy", "max_check_retries"), ("policy", "ask_timeout_s"), ("budget", "usd_per_task"),
    ("budget", "tokens_per_day"), ("model", "attempts"), ("merge", "lease_s"), ('prices."m"', "input_per_mtok"),
    ("mcp.gh", "timeout_s"),
])
def test_a_boolean_is_no_number(tmp_path, table, key):
    extra = 'command = ["srv"]\n' if table.startswith("mcp") else ""
    [p] = problems(write(tmp_path, f'name = "x"\n[{table}]\n{extra}{key} = true\n'))
    assert p.field.endswith(key) and p.line == 3 + bool(extra) and "not a boolean" in p.message, p.render()
    assert p.render().startswith(f"cowork.toml:{p.line}: ")


def test_a_boolean_top_level_number_is_located(tmp_path):
    [p] = problems(write(tmp_path, 'name = "x"\nconcurrency = false\n'))
    assert (p.field, p.line) == ("concurrency", 2) and "not a boolean" in p.message


def test_an_unknown_key_after_an_mcp_server_or_price_table_says_it_landed_in_that_table(tmp_path):
    [p] = problems(write(tmp_path, 'name = "x"\n[merge]\nauto = true\n[mcp.gh]\ncommand = ["gh-mcp"]\n'
                                   'colour = "red"\n'))
    assert (p.line, p.field) == (6, "mcp.gh.colour")
    assert p.message == "unknown key 'colour'; a key written after [mcp.gh] belongs to that table", p.render()
    assert "move top-level keys above the first [table] (line 2)" in p.hint
    assert "command, env, tools, timeout_s" in p.hint
    [p] = problems(write(tmp_path, '[prices."openai/gpt-4o"]\ninput_per_mtok = 1.0\nshade = 2\n'))
    assert p.message == "unknown key 'shade'; a key written after [prices.\"openai/gpt-4o\"] belongs to that table"
    assert "input_per_mtok, output_per_mtok" in p.hint and "(line 1)" in p.hint
