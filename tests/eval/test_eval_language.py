"""Language metrics on hand-made Dutch, Russian and mixed responses."""

from __future__ import annotations

import json

import pytest

from jaxadapt.errors import UserError
from jaxadapt.eval.language import code_switching_rate, copy_scores, gen_share, lcs_length, old_vocab_size, switched

DUTCH = "Ik ga morgen naar de winkel om brood te kopen. Daarna fiets ik terug naar huis."
RUSSIAN = "Завтра я пойду в магазин за хлебом. Потом поеду домой на велосипеде."
DUTCH_THEN_RUSSIAN = "Ik ga morgen naar de winkel. Завтра я пойду в магазин за хлебом."
DUTCH_THEN_ENGLISH = "Ik ga morgen naar de winkel. Tomorrow I will go to the shop to buy some bread."
DUTCH_WITH_NAME = "Ik las gisteren een boek van Лев Толстой en het was prachtig."  # 2 Cyrillic words < 5


def test_code_switching():
    assert not switched(DUTCH, "nl") and not switched(RUSSIAN, "ru") and not switched(DUTCH_WITH_NAME, "nl")
    assert switched(DUTCH_THEN_RUSSIAN, "nl")  # script
    assert switched(DUTCH_THEN_ENGLISH, "nl")  # language identifier, same script
    assert switched(DUTCH, "ru")  # Latin in a Russian answer
    assert code_switching_rate([DUTCH, DUTCH_WITH_NAME, DUTCH_THEN_RUSSIAN, DUTCH_THEN_ENGLISH], "nl") == 0.5
    assert switched(DUTCH_WITH_NAME, "nl", min_words=2)


def test_gen_share(tmp_path):
    (tmp_path / "adaptation.json").write_text(json.dumps({"old_vocab_size": 100}))
    assert gen_share([[1, 100, 150], [99, 250]], old_vocab_size(tmp_path)) == 0.6
    with pytest.raises(UserError, match="adaptation.json"):
        old_vocab_size(tmp_path / "nowhere")


def test_copy_scores():
    src = list(range(100))
    assert lcs_length("ABCBDAB", "BDCABA") == 4
    perfect, one_dropped, half = src, src[:50] + src[51:], src[:50] + [7] * 50
    res = copy_scores([src, src, src], [perfect, one_dropped, half])
    assert res["lcs_share"] == pytest.approx(2 / 3)  # 99/100 still counts, 50/100 does not
    assert res["length_ratio"] == pytest.approx((1 + 100 / 99 + 1) / 3)
    with pytest.raises(UserError):
        copy_scores([src], [])
