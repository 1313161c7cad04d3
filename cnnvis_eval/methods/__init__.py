"""Visualization methods behind one API; importing this package registers them all."""

from . import backprop, cam, deeplift, gradient, path_ig, perturbation, relevance, visualbackprop, xrai  # noqa: F401  (registration)
from .base import METHODS, BatchResult, Explainer, Explanation, get_method, list_methods, register

__all__ = ["METHODS", "BatchResult", "Explainer", "Explanation", "get_method", "list_methods", "register"]
