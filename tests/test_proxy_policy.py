"""Which proxy carries a provider connection: environment, NO_PROXY, config (pure)."""

from __future__ import annotations

import pytest

from trioproxy.core.proxy import ProxyPolicy, ProxyURL, connect_request, parse_proxy_url

ENV = {"HTTPS_PROXY": "http://proxy:3128", "HTTP_PROXY": "http://plain:8080"}


@pytest.mark.parametrize(
    ("env", "scheme", "host", "port", "want"),
    [
        (ENV, "https", "api.openai.com", 443, ProxyURL("proxy", 3128)),
        (ENV, "http", "api.openai.com", 80, ProxyURL("plain", 8080)),
        ({"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"}, "https", "a.b", 443,
         ProxyURL("low", 1)),
        ({"ALL_PROXY": "http://all:9"}, "https", "a.b", 443, ProxyURL("all", 9)),
        ({**ENV, "NO_PROXY": "openai.com"}, "https", "api.openai.com", 443, None),
        ({**ENV, "NO_PROXY": ".openai.com"}, "https", "api.openai.com", 443, None),
        ({**ENV, "NO_PROXY": "openai.com"}, "https", "notopenai.com", 443, ProxyURL("proxy", 3128)),
        ({**ENV, "no_proxy": "*"}, "https", "x.y", 443, None),
        ({**ENV, "NO_PROXY": "10.0.0.0/8"}, "https", "10.2.3.4", 443, None),
        ({**ENV, "NO_PROXY": "10.0.0.0/8"}, "https", "11.2.3.4", 443, ProxyURL("proxy", 3128)),
        ({**ENV, "NO_PROXY": "a.b:8443"}, "https", "a.b", 443, ProxyURL("proxy", 3128)),
        ({**ENV, "NO_PROXY": "a.b:8443"}, "https", "a.b", 8443, None),
        ({**ENV, "NO_PROXY": "[::2]:443"}, "https", "::2", 443, None),
        (ENV, "https", "localhost", 443, None),
        (ENV, "https", "127.0.0.5", 443, None),
        (ENV, "https", "::1", 443, None),
        ({}, "https", "api.openai.com", 443, None),
    ],
)  # fmt: skip
def test_env_policy(env: dict[str, str], scheme: str, host: str, port: int, want: object) -> None:
    assert ProxyPolicy.from_env(env).for_target(scheme, host, port, "env") == want


def test_config_overrides_env_and_none_disables() -> None:
    policy = ProxyPolicy.from_env(ENV)
    assert policy.for_target("https", "a.b", 443, "none") is None
    assert policy.for_target("https", "127.0.0.1", 443, "http://cfg:1") == ProxyURL("cfg", 1)


def test_proxy_url_user_info_becomes_basic_auth() -> None:
    assert parse_proxy_url("http://u%3Ax:p@h") == ProxyURL("h", 80, "Basic dTp4OnA=")
    assert parse_proxy_url("h:3128") == ProxyURL("h", 3128)


@pytest.mark.parametrize("bad", ["https://h:1", "socks5://h:1", "http://"])
def test_unsupported_proxy_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_proxy_url(bad)


def test_connect_request() -> None:
    assert connect_request("a.b", 443, ProxyURL("p", 1, "Basic x")) == (
        b"CONNECT a.b:443 HTTP/1.1\r\nhost: a.b:443\r\nproxy-authorization: Basic x\r\n\r\n"
    )
    assert connect_request("::1", 443, ProxyURL("p", 1)).startswith(b"CONNECT [::1]:443 ")
