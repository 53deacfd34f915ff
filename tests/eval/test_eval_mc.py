"""Few-shot contexts of multiple-choice items: the first k other items, right answer appended, blank-line joined."""

from __future__ import annotations

import pytest

from jaxadapt.errors import UserError
from jaxadapt.eval.mc import Item, with_fewshot


def test_fewshot_contexts():
    items = [Item(f"Q{i}:", ("a", "b"), i % 2) for i in range(4)]
    assert with_fewshot(items, 0) == ["Q0:", "Q1:", "Q2:", "Q3:"]
    assert with_fewshot(items, 2) == ["Q1: b\n\nQ2: a\n\nQ0:", "Q0: a\n\nQ2: a\n\nQ1:", "Q0: a\n\nQ1: b\n\nQ2:",
                                      "Q0: a\n\nQ1: b\n\nQ3:"]
    with pytest.raises(UserError, match="--fewshot 4"):
        with_fewshot(items, 4)
