"""The checks as pytest tests, collected by :mod:`cnnvis_eval.testing.plugin` when
``--cnnvis-model`` is given (one test function per check, parametrized by the plugin as
``test_<check>[<method>-<variant>]``)."""

from cnnvis_eval.testing.plugin import run_case


def test_randomization(request, cnnvis_case):
    run_case(request, cnnvis_case)


def test_class_sensitivity(request, cnnvis_case):
    run_case(request, cnnvis_case)


def test_faithfulness(request, cnnvis_case):
    run_case(request, cnnvis_case)


def test_invariance(request, cnnvis_case):
    run_case(request, cnnvis_case)


def test_stability(request, cnnvis_case):
    run_case(request, cnnvis_case)


def test_conservation(request, cnnvis_case):
    run_case(request, cnnvis_case)


def test_localization(request, cnnvis_case):
    run_case(request, cnnvis_case)


def test_cost(request, cnnvis_case):
    run_case(request, cnnvis_case)
