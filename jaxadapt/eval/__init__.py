"""Evaluation: bits per byte / perplexity, multiple choice (lm-eval compatible), language metrics, run reports."""
