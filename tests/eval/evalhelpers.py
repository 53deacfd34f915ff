"""Shared data of the eval tests (a module of its own: several conftest.py files exist, none is importable)."""

TEXTS = [
    "De kat zit op de mat en kijkt naar buiten.",
    "Het weer in Nederland is vaak nat en winderig.",
    "The quick brown fox jumps over the lazy dog.",
    "Кошка сидит на ковре и смотрит в окно.",
    "Paris is the capital of France; Amsterdam is the capital of the Netherlands.",
]
