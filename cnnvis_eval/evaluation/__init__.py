"""Evaluation: cost references, the comparison grid, and scoring."""
