"""Codes are as long as asked, drawn only from their alphabet, and every character is as likely."""

from __future__ import annotations

from collections import Counter

import pytest

from infra.codes import random_code

DIGITS = "0123456789"


@pytest.mark.parametrize("length", [0, 1, 2, 7, 16, 64])
def test_length_and_alphabet(length: int) -> None:
    for alphabet in (DIGITS, "ab", "".join(chr(0x100 + i) for i in range(256))):
        code = random_code(alphabet, length)
        assert len(code) == length
        assert set(code) <= set(alphabet)


@pytest.mark.parametrize("alphabet", ["", "a", "".join(chr(0x100 + i) for i in range(257))])
def test_alphabet_of_wrong_size_is_refused(alphabet: str) -> None:
    with pytest.raises(ValueError):
        random_code(alphabet, 8)


def test_codes_differ() -> None:
    assert len({random_code(DIGITS, 20) for _ in range(100)}) == 100


def test_no_modulo_bias() -> None:
    """256 % 200 = 56: folding bytes onto 200 characters would make the first 56 twice as likely."""
    alphabet = "".join(chr(0x100 + i) for i in range(200))
    counts = Counter(random_code(alphabet, 200_000))
    assert set(counts) == set(alphabet)
    first = sum(counts[c] for c in alphabet[:56]) / 56
    rest = sum(counts[c] for c in alphabet[56:]) / 144
    assert 0.9 < first / rest < 1.1
