"""The token estimate counts exactly what its regex counts, fast on big prompts."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from trioproxy.core.tokens import estimate_tokens

REGEX = re.compile(r"\w+|[^\w\s]")


@settings(max_examples=2_000, deadline=None)
@given(st.text(max_size=60))
def test_the_estimate_is_the_regex_count_on_any_text(text: str) -> None:
    assert estimate_tokens(text) == len(REGEX.findall(text))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=80))
def test_the_estimate_is_the_regex_count_on_ascii(text: str) -> None:
    assert estimate_tokens(text) == len(REGEX.findall(text))


def test_edge_characters() -> None:
    for text in ("", "a", " ", ".", "é", "e\u0301", "中文文本\uff0c这是测试\u3002", "\x1c\x85\xa0\u3000",
                 "\U0001f600x", "it\u2019s", "_", "a_b-c", "\t\n\r\x0b\x0c", "naïve café"):  # fmt: skip
        assert estimate_tokens(text) == len(REGEX.findall(text)), repr(text)


def test_a_big_prompt_is_counted_exactly() -> None:
    text = "The quick brown fox\u2019s jump, over the lazy dog! 中文。" * 50_000
    assert estimate_tokens(text) == len(REGEX.findall(text))
