"""Config loading: every rule names its key path; the example and the demo are valid."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trioproxy.config import (
    ConfigError,
    check_config,
    demo_settings,
    hash_key,
    load_settings,
    parse_settings,
    validate_settings,
)
from trioproxy.config.model import DEFAULT_FALLBACK_STATUSES, Chain, Target

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "trioproxy.toml"
EXAMPLE_ENV = {
    "OPENAI_API_KEY": "sk-openai-SECRET",
    "ANTHROPIC_API_KEY": "sk-ant-SECRET",
    "TRIOPROXY_REDIS_URL": "redis://:redispass-SECRET@localhost:6379/0",
    "TRIOPROXY_DATABASE_URL": "postgresql://gw:dbpass-SECRET@localhost/gw",
    "TRIOPROXY_KEY_SUPPORT": "sk-caller-SECRET",
    "TRIOPROXY_KEY_OPS": "sk-ops-SECRET",
}

MINIMAL = """
[providers.openai]
kind = "openai"
base_url = "https://api.openai.com/v1/"
api_key_env = "OPENAI_API_KEY"

[models.gpt]
provider = "openai"
input_per_mtok = 0.15
output_per_mtok = 0.60

[models.claude]
provider = "openai"
input_per_mtok = 3
output_per_mtok = 15

[[routes.chat.chains.default]]
model = "gpt"

[[routes.chat.chains.default]]
model = "claude"

[[routes.chat.rules]]
chain = "default"
priority = ["high"]

[[api_keys]]
name = "app"
key_env = "APP_KEY"
team = "t1"

[budgets.teams.t1]
daily_usd = 10
"""
ENV = {"OPENAI_API_KEY": "sk-openai-SECRET", "APP_KEY": "sk-app-SECRET", "OTHER": "sk-other"}

Data = dict[str, Any]


def minimal() -> Data:
    return tomllib.loads(MINIMAL)


def problems_of(data: Data, env: dict[str, str] = ENV) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, env=env)
    return info.value.problems


def target(d: Data, i: int = 0) -> Data:
    t: Data = d["routes"]["chat"]["chains"]["default"][i]
    return t


def second_key(d: Data, **fields: Any) -> None:
    entry = {"name": "other", "key_env": "OTHER", "team": "t1", **fields}
    d["api_keys"].append({k: v for k, v in entry.items() if v is not None})


def use_hash(d: Data, digest: str) -> None:
    del d["api_keys"][0]["key_env"]
    d["api_keys"][0]["key_sha256"] = digest


# (what the edit does, expected problem: it starts with this text)
CASES: list[tuple[Callable[[Data], object], str]] = [
    (lambda d: d.update(servers={}), "servers: unknown key (did you mean 'server'?)"),
    (
        lambda d: d.update(server={"max_in_flight": True}),
        "server.max_in_flight: must be an integer, got True",
    ),
    (lambda d: d.update(server={"max_in_flight": 0}), "server.max_in_flight: must be > 0, got 0"),
    (
        lambda d: d.update(server={"max_inflight": 5}),
        "server.max_inflight: unknown key (did you mean 'max_in_flight'?)",
    ),
    (lambda d: d.update(server={"stream_buffer": -1}), "server.stream_buffer: must be >= 0"),
    (
        lambda d: d.update(server={"shutdown_grace_s": "30s"}),
        "server.shutdown_grace_s: must be a number, got '30s'",
    ),
    (lambda d: d.update(breaker={"cooldown_s": 0}), "breaker.cooldown_s: must be > 0"),
    (
        lambda d: d.update(breaker={"failure_threshold": 2.5}),
        "breaker.failure_threshold: must be an integer",
    ),
    (lambda d: d.update(storage={"state_dir": ""}), "storage.state_dir: must not be empty"),
    (
        lambda d: d.update(storage={"redis_url_env": "NOPE"}),
        "storage.redis_url_env: environment variable NOPE is not set",
    ),
    (
        lambda d: d.update(storage={"redis_url": "redis://x", "redis_url_env": "OTHER"}),
        "storage.redis_url: set either redis_url or redis_url_env, not both",
    ),
    (
        lambda d: d.update(storage={"database_url": "mysql://u:pw@h/db"}),
        "storage.database_url: must be a postgresql:// or postgres:// URL",
    ),
    (
        lambda d: d["providers"]["openai"].update(kind="azure"),
        "providers.openai.kind: must be one of openai, openai_compatible, anthropic, got 'azure'",
    ),
    (
        lambda d: d["providers"]["openai"].update(base_url="ftp://host"),
        "providers.openai.base_url: must be an http:// or https:// URL",
    ),
    (
        lambda d: d["providers"]["openai"].pop("base_url"),
        "providers.openai.base_url: required (a string)",
    ),
    (
        lambda d: d["providers"]["openai"].update(api_key_env="NOPE"),
        "providers.openai.api_key_env: environment variable NOPE is not set",
    ),
    (
        lambda d: d["providers"]["openai"].pop("api_key_env"),
        "providers.openai.api_key_env: required for kind 'openai'",
    ),
    (
        lambda d: d["providers"]["openai"].update(max_connections=0),
        "providers.openai.max_connections: must be > 0",
    ),
    (
        lambda d: d["providers"]["openai"].update(pool_idle_s=0),
        "providers.openai.pool_idle_s: must be > 0",
    ),
    (
        lambda d: d["providers"]["openai"].update(ca_file="/nonexistent/ca.pem"),
        "providers.openai.ca_file: no such file: '/nonexistent/ca.pem'",
    ),
    (
        lambda d: d["providers"]["openai"].update(proxy="socks5://h:1"),
        "providers.openai.proxy: only http:// proxies are supported",
    ),
    (
        lambda d: d["providers"]["openai"].update(api_key="sk-inline"),
        "providers.openai.api_key: unknown key (did you mean 'api_key_env'?)",
    ),
    (lambda d: d["providers"].update(spare=3), "providers.spare: must be a table, got int"),
    (
        lambda d: d["models"]["gpt"].update(provider="nope"),
        "models.gpt.provider: unknown provider 'nope' (known: openai)",
    ),
    (
        lambda d: d["models"]["gpt"].pop("input_per_mtok"),
        "models.gpt.input_per_mtok: required (a number)",
    ),
    (
        lambda d: d["models"]["gpt"].update(output_per_mtok=-1),
        "models.gpt.output_per_mtok: must be >= 0, got -1.0",
    ),
    (
        lambda d: d["models"]["gpt"].update(input_per_mtok=math.nan),
        "models.gpt.input_per_mtok: must be a number, got nan",
    ),
    (
        lambda d: d["models"]["gpt"].update(context_limit=1000, max_output_tokens=2000),
        "models.gpt.max_output_tokens: must be <= context_limit (1000)",
    ),
    (
        lambda d: d["models"]["gpt"].update(deployment=""),
        "models.gpt.deployment: must not be empty",
    ),
    (
        lambda d: target(d).update(model="gpt-5x"),
        "routes.chat.chains.default[0].model: unknown model 'gpt-5x' (known: claude, gpt)",
    ),
    (lambda d: target(d).pop("model"), "routes.chat.chains.default[0].model: required (a string)"),
    (
        lambda d: target(d).update(connect_timeout_s=0),
        "routes.chat.chains.default[0].connect_timeout_s: must be > 0",
    ),
    (
        lambda d: target(d).update(idle_timeout_s=-1),
        "routes.chat.chains.default[0].idle_timeout_s: must be > 0",
    ),
    (
        lambda d: target(d).update(first_byte_timeout_s=60, total_timeout_s=30),
        "routes.chat.chains.default[0].first_byte_timeout_s: must be <= total_timeout_s (30.0)",
    ),
    (  # a request on it could outlive its reservation: settled at its worst case, silently
        lambda d: target(d).update(total_timeout_s=1200),
        "routes.chat.chains.default[0].total_timeout_s: 1200 s is not shorter than "
        "budgets.reservation_lease_s (900 s)",
    ),
    (
        lambda d: target(d).update(hedge_after_ms=-1),
        "routes.chat.chains.default[0].hedge_after_ms: must be >= 0",
    ),
    (
        lambda d: target(d).update(hedge_after_ms=1.5),
        "routes.chat.chains.default[0].hedge_after_ms: must be an integer",
    ),
    (
        lambda d: target(d, 1).update(hedge_after_ms=500),
        "routes.chat.chains.default[1].hedge_after_ms: the last target has no next target",
    ),
    (
        lambda d: target(d).update(timeout_s=5),
        "routes.chat.chains.default[0].timeout_s: unknown key",
    ),
    (
        lambda d: d["routes"]["chat"]["chains"].update(fast=[]),
        "routes.chat.chains.fast: a chain needs at least one target",
    ),
    (
        lambda d: d["routes"]["chat"]["chains"].update(fast={"model": "gpt"}),
        "routes.chat.chains.fast: must be an array, got dict",
    ),
    (
        lambda d: d["routes"]["chat"].update(chains={"main": [{"model": "gpt"}]}, rules=[]),
        "routes.chat.chains: a route needs a chain named 'default'",
    ),
    (
        lambda d: d["routes"]["chat"]["rules"][0].update(chain="nope"),
        "routes.chat.rules[0].chain: unknown chain 'nope' (known: default)",
    ),
    (
        lambda d: d["routes"]["chat"]["rules"][0].update(priority=["urgent"]),
        "routes.chat.rules[0].priority: unknown priority 'urgent'",
    ),
    (
        lambda d: d["routes"]["chat"]["rules"][0].update(priority="high"),
        "routes.chat.rules[0].priority: must be an array, got 'high'",
    ),
    (
        lambda d: d["routes"]["chat"]["rules"][0].update(priority=[]),
        "routes.chat.rules[0].priority: must not be empty",
    ),
    (
        lambda d: d["routes"]["chat"]["rules"][0].update(
            min_prompt_tokens=900, max_prompt_tokens=500
        ),
        "routes.chat.rules[0].min_prompt_tokens: must be <= max_prompt_tokens (500)",
    ),
    (
        lambda d: d["routes"]["chat"]["rules"][0].update(max_output_tokens=0),
        "routes.chat.rules[0].max_output_tokens: must be > 0",
    ),
    (
        lambda d: d["routes"]["chat"].update(fallback_statuses=[429, 200]),
        "routes.chat.fallback_statuses: 200 is not an HTTP error status",
    ),
    (
        lambda d: d["routes"]["chat"].update(fallback_statuses=[True]),
        "routes.chat.fallback_statuses[0]: must be int, got True",
    ),
    (
        lambda d: d["routes"]["chat"].update(reservation_cap_usd=0),
        "routes.chat.reservation_cap_usd: must be > 0",
    ),
    (
        lambda d: d["routes"]["chat"].update(cache={"scope": "world"}),
        "routes.chat.cache.scope: must be 'team' or 'global'",
    ),
    (
        lambda d: d["routes"]["chat"].update(cache={"semantic_threshold": 1.5}),
        "routes.chat.cache.semantic_threshold: must be in (0, 1]",
    ),
    (
        lambda d: d["routes"]["chat"].update(cache={"semantic_target_false_hit": 0}),
        "routes.chat.cache.semantic_target_false_hit: must be in (0, 1)",
    ),
    (
        lambda d: d["routes"]["chat"].update(cache={"semantic_band": [0.9, 0.8]}),
        "routes.chat.cache.semantic_band: need 0 < floor <= ceiling <= 1",
    ),
    (
        lambda d: d["routes"]["chat"].update(cache={"semantic_band": [0.9]}),
        "routes.chat.cache.semantic_band: must be [floor, ceiling]",
    ),
    (
        lambda d: d["routes"]["chat"].update(cache={"confirm_users": 0}),
        "routes.chat.cache.confirm_users: must be >= 1",
    ),
    (
        lambda d: d["routes"]["chat"].update(cache={"exact_ttl_s": -1}),
        "routes.chat.cache.exact_ttl_s: must be >= 0",
    ),
    (
        lambda d: d["routes"]["chat"].update(cache={"allow_tools": 1}),
        "routes.chat.cache.allow_tools: must be true or false, got 1",
    ),
    (
        lambda d: d["routes"].update(gpt=d["routes"]["chat"]),
        "routes.gpt: route name collides with model 'gpt'",
    ),
    (lambda d: d.update(api_keys=[]), "api_keys: at least one API key is required"),
    (lambda d: d["api_keys"][0].pop("key_env"), "api_keys[0]: needs key_sha256 or key_env"),
    (
        lambda d: d["api_keys"][0].update(key_sha256=hash_key("x")),
        "api_keys[0].key_sha256: set either key_sha256 or key_env, not both",
    ),
    (
        lambda d: d["api_keys"][0].update(key_env="NOPE"),
        "api_keys[0].key_env: environment variable NOPE is not set",
    ),
    (lambda d: use_hash(d, "abc"), "api_keys[0].key_sha256: must be 64 hex digits"),
    (lambda d: d["api_keys"][0].pop("team"), "api_keys[0].team: required (a string)"),
    (
        lambda d: d["api_keys"][0].update(priority="urgent"),
        "api_keys[0].priority: must be one of low, medium, high",
    ),
    (
        lambda d: d["api_keys"][0].update(routes=["chat", "nope"]),
        "api_keys[0].routes: unknown route or model 'nope'",
    ),
    (lambda d: d["api_keys"][0].update(routes=[]), "api_keys[0].routes: must not be empty"),
    (
        lambda d: d["api_keys"][0].update(end_user_budgets="yes"),
        "api_keys[0].end_user_budgets: must be true or false",
    ),
    (
        lambda d: second_key(d, key_env="APP_KEY"),
        "api_keys[1].key_env: duplicate key: the same key as api_keys[0]",
    ),
    (
        lambda d: second_key(d, key_sha256=hash_key(ENV["APP_KEY"]), key_env=None),
        "api_keys[1].key_sha256: duplicate key: the same key as api_keys[0]",
    ),
    (
        lambda d: second_key(d, name="app"),
        "api_keys[1].name: duplicate key name 'app' (also api_keys[0])",
    ),
    (
        lambda d: d.update(budgets={"timezone": "Mars/Olympus_Mons"}),
        "budgets.timezone: unknown time zone 'Mars/Olympus_Mons'",
    ),
    (
        lambda d: d.update(budgets={"webhook_url": "hooks.example.com"}),
        "budgets.webhook_url: must be an http:// or https:// URL",
    ),
    (
        lambda d: d["budgets"]["teams"]["t1"].update(alert_threshold=0),
        "budgets.teams.t1.alert_threshold: must be in (0, 1]",
    ),
    (
        lambda d: d["budgets"]["teams"]["t1"].update(daily_usd=-5),
        "budgets.teams.t1.daily_usd: must be > 0",
    ),
    (
        lambda d: d["budgets"]["teams"]["t1"].pop("daily_usd"),
        "budgets.teams.t1: set daily_usd, monthly_usd or both",
    ),
    (
        lambda d: d["budgets"]["teams"].update(t2={"daily_usd": 1}),
        "budgets.teams.t2: no API key has team 't2' (teams: t1)",
    ),
    (
        lambda d: d["budgets"].update(users={"*": {"window_s": 60}}),
        'budgets.users."*".tokens: required (an integer)',
    ),
    (
        lambda d: d["budgets"].update(users={"bob": {"tokens": 0}}),
        "budgets.users.bob.tokens: must be > 0",
    ),
]


@pytest.mark.parametrize(("edit", "expected"), CASES, ids=[c[1].split(":")[0] for c in CASES])
def test_each_rule_is_one_problem_naming_its_path(
    edit: Callable[[Data], object], expected: str
) -> None:
    data = minimal()
    edit(data)
    problems = problems_of(data)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_minimal_config_loads_with_defaults() -> None:
    settings = parse_settings(minimal(), env=ENV)
    assert settings.providers["openai"].base_url == "https://api.openai.com"
    assert settings.models["gpt"].deployment == "gpt"
    assert settings.models["claude"].input_per_mtok == 3.0
    route = settings.routes["chat"]
    assert [t.model for t in route.chains["default"].targets] == ["gpt", "claude"]
    assert route.fallback_statuses == DEFAULT_FALLBACK_STATUSES
    (key,) = settings.api_keys.values()
    assert settings.api_keys == {hash_key("sk-app-SECRET"): key}
    assert (key.user, key.feature, key.priority, key.routes) == ("app", "default", "medium", None)
    assert settings.demo is False


def test_targets_carry_their_model_and_provider_after_load() -> None:
    settings = parse_settings(minimal(), env=ENV)
    gpt, claude = settings.routes["chat"].chains["default"].targets
    assert gpt.spec is settings.models["gpt"] and claude.spec is settings.models["claude"]
    assert gpt.spec.endpoint is settings.providers["openai"]
    assert claude.spec.endpoint is settings.providers[claude.spec.provider]
    with pytest.raises(LookupError):
        _ = Target("unresolved").spec


def test_every_problem_is_reported_at_once() -> None:
    data = minimal()
    data["server"] = {"max_in_flight": -1, "bogus": 1}
    target(data).update(model="gpt-5x")
    data["api_keys"][0]["key_env"] = "NOPE"
    with pytest.raises(ConfigError) as info:
        parse_settings(data, env=ENV)
    error = info.value
    assert error.problems == (  # form (while reading), then meaning (cross-checks)
        "server.bogus: unknown key (known: admin_host, admin_port, body_grace_s, body_min_rate, "
        "body_timeout_s, header_timeout_s, keep_alive_s, key_cache_ttl_s, max_body_bytes, "
        "max_head_bytes, "
        "max_in_flight, max_in_flight_per_key, queue_max, queue_timeout_s, retry_after_max_s, "
        "send_timeout_s, shutdown_grace_s, stream_buffer, tls_cert_file, tls_key_file)",
        "api_keys[0].key_env: environment variable NOPE is not set",
        "server.max_in_flight: must be > 0, got -1",
        "routes.chat.chains.default[0].model: unknown model 'gpt-5x' (known: claude, gpt)",
    )
    assert str(error).startswith("4 config problems:\n  server.bogus: unknown key")


def test_odd_names_are_quoted_in_paths() -> None:
    data = minimal()
    data["models"]["gpt-4.1"] = {"provider": "nope", "input_per_mtok": 1, "output_per_mtok": 1}
    assert problems_of(data) == (
        "models.\"gpt-4.1\".provider: unknown provider 'nope' (known: openai)",
    )


def test_openai_compatible_provider_may_have_no_key() -> None:
    data = minimal()
    data["providers"]["local"] = {"kind": "openai_compatible", "base_url": "http://vllm:8000/v1"}
    settings = parse_settings(data, env=ENV)
    assert settings.providers["local"].api_key is None
    assert settings.providers["local"].base_url == "http://vllm:8000"


def test_example_loads() -> None:
    settings = load_settings(EXAMPLE, env=EXAMPLE_ENV)
    assert set(settings.providers) == {"openai", "anthropic"}
    assert settings.providers["anthropic"].api_key is not None
    assert settings.providers["anthropic"].api_key.reveal() == "sk-ant-SECRET"
    assert settings.models["claude-sonnet"].deployment == "claude-3-5-sonnet-20241022"
    chat = settings.routes["chat"]
    first = chat.chains["default"].targets[0]
    assert (first.model, first.timeouts.first_byte, first.hedge_after_ms) == (
        "gpt-4o-mini",
        10.0,
        1500,
    )
    assert [r.chain for r in chat.rules] == ["premium", "cheap"]
    assert chat.cache.exact_ttl_s == 3600
    assert 418 not in settings.routes["extract"].fallback_statuses
    by_name = {k.name: (h, k) for h, k in settings.api_keys.items()}
    assert by_name["support-bot"][0] == hash_key("sk-caller-SECRET")
    # a literal hash in the example matches no key anyone knows (it was sha256("test"): a
    # deployment that kept the entry let anyone in with the key "test")
    weak = ("", "test", "password", "changeme", "secret", "sk-test", "demo", "key")
    assert not {hash_key(w) for w in weak} & set(settings.api_keys)
    assert by_name["search-indexer"][1].routes == {"extract", "gpt-4o-mini"}
    assert settings.budgets.timezone == "Europe/Berlin"
    assert settings.budgets.users["*"].tokens == 200_000
    assert settings.storage.database_url is not None


def test_secrets_never_show() -> None:
    settings = load_settings(EXAMPLE, env=EXAMPLE_ENV)
    assert "SECRET" not in repr(settings) and "SECRET" not in str(settings)
    data = minimal()
    data["storage"] = {"redis_url": "http://user:pw-SECRET@host"}
    (problem,) = problems_of(data)
    assert problem.startswith("storage.redis_url:") and "SECRET" not in problem


def test_load_reports_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "absent.toml", env={})
    assert "cannot read config" in info.value.problems[0]
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError) as info:
        load_settings(bad, env={})
    assert info.value.problems[0].startswith(f"{bad}: invalid TOML")


def test_check_config_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    assert check_config(str(EXAMPLE)) == 0
    out = capsys.readouterr()
    # where the state lives, as serve will find it (a relative state_dir: the file's folder)
    assert out.out == "ok: 2 providers, 4 models, 2 routes, 3 keys; state in /var/lib/trioproxy\n"
    assert out.err.startswith(  # a warning, not a problem (exit status 0)
        "warning: api_keys[0].key_env: the admin key in TRIOPROXY_KEY_OPS is 13 characters"
    )

    broken = tmp_path / "broken.toml"
    broken.write_text(
        EXAMPLE.read_text().replace('model = "claude-haiku"', 'model = "claude-hiaku"', 1)
    )
    monkeypatch.delenv("OPENAI_API_KEY")
    assert check_config(str(broken)) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines() == [
        "providers.openai.api_key_env: environment variable OPENAI_API_KEY is not set",
        "routes.chat.chains.default[1].model: unknown model 'claude-hiaku' "
        "(known: claude-haiku, claude-sonnet, gpt-4o, gpt-4o-mini)",
    ]


def test_check_config_warns_of_a_model_with_no_output_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chat model with no max_output_tokens has every request capped at 4096 output tokens;
    check-config said nothing. An embedding model (no output price) has no output."""
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    text = EXAMPLE.read_text()
    assert "max_output_tokens = 16_384\n" in text
    uncapped = tmp_path / "uncapped.toml"
    uncapped.write_text(
        text.replace("max_output_tokens = 16_384\n", "", 1)
        + '\n[models.embed]\nprovider = "openai"\ninput_per_mtok = 0.02\n'
    )
    assert check_config(str(uncapped)) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "max_output_tokens" in line] == [
        "warning: models.gpt-4o-mini.max_output_tokens: not set, so every request to "
        "gpt-4o-mini is capped at 4096 output tokens; set it to what the model allows"
    ]
    assert check_config(str(EXAMPLE)) == 0
    assert "max_output_tokens" not in capsys.readouterr().err


def test_check_config_runs_serves_start_up_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``check-config`` (the unit's ExecStartPre) passed a state directory the service cannot
    write; ``serve`` then refused to start. It now says so, naming the key."""
    from trioproxy.cli import main

    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    text = EXAMPLE.read_text()
    assert text.count('state_dir = "/var/lib/trioproxy"') == 1
    for state, code in ((blocker / "state", 1), (tmp_path / "state", 0)):
        cfg = tmp_path / "cfg.toml"
        cfg.write_text(text.replace('"/var/lib/trioproxy"', f'"{state}"'))
        assert main(["check-config", str(cfg)]) == code
        out = capsys.readouterr()
        if code:
            assert out.err.startswith(f"storage.state_dir: {state} is not a directory"), out.err
        else:  # (checked, not made: serve makes it, as the user it runs as)
            assert out.out.startswith("ok: ") and not state.exists()


def test_demo_settings_are_valid() -> None:
    settings = demo_settings("http://127.0.0.1:8090/v1", "sk-demo", state_dir="/tmp/tp")
    assert validate_settings(settings) == []
    assert settings.demo is True
    assert settings.storage.state_dir == "/tmp/tp"
    assert {p.base_url for p in settings.providers.values()} == {"http://127.0.0.1:8090"}
    assert {p.kind for p in settings.providers.values()} == {"openai", "anthropic"}
    assert settings.models["claude-haiku"].provider == "sim-anthropic"
    assert (
        settings.models["gpt-4o"].input_per_mtok,
        settings.models["gpt-4o"].output_per_mtok,
    ) == (2.5, 10.0)
    chat = settings.routes["chat"]
    assert {n: [t.model for t in c.targets] for n, c in chat.chains.items()} == {
        "default": ["gpt-4o-mini", "claude-haiku"],
        "premium": ["gpt-4o", "claude-sonnet", "gpt-4o-mini"],
        "cheap": ["gpt-4o-mini", "claude-haiku"],
    }
    assert chat.chains["default"].targets[0].hedge_after_ms == 1500
    assert [(r.chain, r.priority, r.reason) for r in chat.rules] == [
        ("premium", {"high"}, "high priority"),
        ("cheap", {"low"}, "short low-priority request"),
    ]
    extract = settings.routes["extract"].chains["default"].targets
    assert [t.model for t in extract] == ["claude-sonnet", "gpt-4o"]
    assert all(t.hedge_after_ms is None for t in extract)
    (key,) = settings.api_keys.values()
    assert settings.api_keys == {hash_key("sk-demo"): key}
    assert (key.name, key.team, key.user, key.routes) == ("demo", "demo", "demo", None)
    assert "sk-demo" not in repr(settings)


def test_demo_settings_share_the_checks() -> None:
    with pytest.raises(ConfigError) as info:
        demo_settings("localhost:8090", "sk-demo")
    assert [p.split(":")[0] for p in info.value.problems] == [
        "providers.sim-openai.base_url",
        "providers.sim-anthropic.base_url",
    ]
    settings = demo_settings("http://127.0.0.1:8090", "sk-demo")
    chat = settings.routes["chat"]
    broken_chain = Chain("default", (Target("gpt-5x"),))
    broken = dataclasses.replace(
        settings,
        routes={
            **settings.routes,
            "chat": dataclasses.replace(chat, chains={**chat.chains, "default": broken_chain}),
        },
    )
    assert validate_settings(broken) == [
        "routes.chat.chains.default[0].model: unknown model 'gpt-5x' "
        "(known: claude-haiku, claude-sonnet, gpt-4o, gpt-4o-mini, text-embedding-3-large, "
        "text-embedding-3-small)"
    ]


def test_embedder_section() -> None:
    base: dict[str, Any] = {
        "providers": {"p": {"kind": "openai", "base_url": "http://x", "api_key_env": "K"}},
        "models": {"m": {"provider": "p", "input_per_mtok": 1, "output_per_mtok": 1}},
        "api_keys": [{"name": "k", "key_sha256": hash_key("abc"), "team": "t"}],
    }
    assert parse_settings(base, env={"K": "v"}).embedder.kind == "local"
    s = parse_settings(
        {**base, "embedder": {"kind": "openai", "api_key_env": "E", "dim": 8}},
        env={"K": "v", "E": "sk-emb-SECRET"},
    )
    assert (s.embedder.kind, s.embedder.dim) == ("openai", 8)
    assert s.embedder.api_key is not None and "SECRET" not in repr(s.embedder)
    with pytest.raises(ConfigError) as err:
        parse_settings({**base, "embedder": {"kind": "bert", "dim": 0}}, env={"K": "v"})
    assert any(p.startswith("embedder.kind") for p in err.value.problems)
    assert any(p.startswith("embedder.dim") for p in err.value.problems)


def test_embedder_model_path(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "providers": {"p": {"kind": "openai", "base_url": "http://x", "api_key_env": "K"}},
        "models": {"m": {"provider": "p", "input_per_mtok": 1, "output_per_mtok": 1}},
        "api_keys": [{"name": "k", "key_sha256": hash_key("abc"), "team": "t"}],
    }
    model = tmp_path / "minilm.onnx"
    model.write_bytes(b"x")
    s = parse_settings({**base, "embedder": {"model_path": str(model)}}, env={"K": "v"})
    assert s.embedder.model_path == str(model)
    with pytest.raises(ConfigError) as err:
        parse_settings({**base, "embedder": {"model_path": str(tmp_path / "no")}}, env={"K": "v"})
    assert list(err.value.problems) == [f"embedder.model_path: no such file: {tmp_path / 'no'}"]
    with pytest.raises(ConfigError) as err:
        parse_settings(
            {**base, "embedder": {"kind": "openai", "model_path": str(model)}}, env={"K": "v"}
        )
    assert 'embedder.model_path: only with kind = "local"' in err.value.problems


def test_key_rate_limits() -> None:
    base: dict[str, Any] = {
        "providers": {"p": {"kind": "openai", "base_url": "http://x", "api_key_env": "K"}},
        "models": {"m": {"provider": "p", "input_per_mtok": 1, "output_per_mtok": 1}},
    }
    key = {"name": "k", "key_sha256": hash_key("abc"), "team": "t", "rpm": 60, "tpm": 10_000}
    s = parse_settings({**base, "api_keys": [key]}, env={"K": "v"})
    (k,) = s.api_keys.values()
    assert (k.rpm, k.tpm) == (60, 10_000)
    with pytest.raises(ConfigError) as err:
        parse_settings({**base, "api_keys": [{**key, "rpm": 0, "tpm": True}]}, env={"K": "v"})
    assert any(p.startswith("api_keys[0].rpm") for p in err.value.problems)
    assert any(p.startswith("api_keys[0].tpm") for p in err.value.problems)


def test_route_cache_semantic_controls() -> None:
    d = minimal()
    d["routes"]["chat"]["cache"] = {
        "semantic_ttl_s": 60,
        "semantic_target_false_hit": 0.02,
        "semantic_band": [0.82, 0.97],
        "confirm_users": 3,
    }
    cache = parse_settings(d, env=ENV).routes["chat"].cache
    assert cache.semantic_target_false_hit == 0.02
    assert cache.semantic_band == (0.82, 0.97)
    assert (cache.confirm_users, cache.semantic_threshold) == (3, None)


def test_dashboard_trusted_proxies_are_addresses_or_ranges() -> None:
    d = minimal()
    d["dashboard"] = {"trusted_proxies": ["127.0.0.1", "10.0.0.0/8", "fd00::/8", "10.1.2.3/16"]}
    got = parse_settings(d, env=ENV).dashboard.trusted_proxies
    assert got == ("127.0.0.1/32", "10.0.0.0/8", "fd00::/8", "10.1.0.0/16")
    assert parse_settings(minimal(), env=ENV).dashboard.trusted_proxies == ()  # none trusted
    d["dashboard"] = {"trusted_proxies": ["nginx", "10.0.0.0/33"]}
    assert problems_of(d) == (
        "dashboard.trusted_proxies[0]: not an address or CIDR range: 'nginx'",
        "dashboard.trusted_proxies[1]: not an address or CIDR range: '10.0.0.0/33'",
    )
