"""Visualization methods behind one API; importing this package registers them all."""

from . import backprop, gradient, relevance  # noqa: F401  (registration side effects)
from .base import BatchResult, Explainer, Explanation, get_method, list_methods, register

__all__ = ["BatchResult", "Explainer", "Explanation", "get_method", "list_methods", "register"]
