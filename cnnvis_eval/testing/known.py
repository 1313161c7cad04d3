"""Failures the literature predicts, with their citations (reported, never hidden).

A verdict of ``fail`` for a (check, method) listed here carries the citation as
``Verdict.known_failure``; the pytest plugin turns it into an ``xfail`` with that reason.
The entries mirror the cited strict-xfail reasons of ``suites/sanity/test_randomization.py``
and ``suites/sanity/test_invariance.py`` (the measured-only ones there are not claims of the
literature and are not repeated).  Keys are ``(check, variant or None, method)``.
"""

from __future__ import annotations

ADEBAYO = "Adebayo et al. 2018, Sanity Checks for Saliency Maps"
NIE = "Nie et al. 2018, A Theoretical Explanation for Perplexing Behaviors of Backpropagation-based Visualizations"
SIXT = "Sixt et al. 2020, When Explanations Lie: Why Many Modified BP Attributions Fail"
KINDERMANS = "Kindermans et al. 2017, The (un)reliability of saliency methods"
VBP = "Bojarski et al. 2016: VisualBackProp averages feature maps and never reads the class layer"
_Z_PLUS = f"{SIXT}: z+ relevance converges to a map independent of the upper layers"
Z_PLUS = ("deep_taylor", "deep_taylor_bounded", "lrp_alpha1beta0")

KNOWN_FAILURES: dict[tuple[str, str | None, str], str] = {
    ("randomization", "cascading_top", "guided_backprop"): f"{ADEBAYO} (Fig. 2); {NIE}",
    ("randomization", "cascading_top", "deconvnet"): f"{NIE}: DeconvNet recovers the image whatever the head",
    ("randomization", "cascading_top", "visual_backprop"): VBP,
    ("randomization", "cascading_half", "guided_backprop"): f"{ADEBAYO} (Fig. 2)",
    ("class_sensitivity", None, "guided_backprop"): f"{NIE}: Guided Backprop is class-insensitive",
    ("class_sensitivity", None, "deconvnet"): f"{NIE}: DeconvNet is class-insensitive",
    ("class_sensitivity", None, "visual_backprop"): VBP,
    **{("randomization", "cascading_top", m): _Z_PLUS for m in Z_PLUS},
    **{("class_sensitivity", None, m): _Z_PLUS for m in Z_PLUS},
    ("randomization", "cascading_top", "excitation_backprop"): f"{_Z_PLUS} (Excitation Backprop is z+ from a "
                                                               "one-hot prior)",
    ("class_sensitivity", None, "excitation_backprop"): f"{_Z_PLUS} (Excitation Backprop is z+ from a one-hot "
                                                        "prior)",
    ("invariance", "shift", "gradient_x_input"): f"{KINDERMANS}: gradient x input multiplies by the input",
    ("invariance", "shift", "integrated_gradients"): f"{KINDERMANS}: integrated gradients with a zero reference "
                                                     "point is not input invariant",
    ("invariance", "shift", "lrp_epsilon"): f"{KINDERMANS}: LRP with a zero root point is not input invariant",
    ("invariance", "shift", "lrp_alpha1beta0"): f"{KINDERMANS}: the alpha1-beta0 root point does not move with "
                                                "the input",
    ("invariance", "shift", "excitation_backprop"): f"{KINDERMANS}: the winning probabilities at the pixels "
                                                    "are z+ shares of x, whose root point does not move with "
                                                    "the input",
    ("invariance", "shift", "occlusion"): f"reference-point argument of {KINDERMANS}: the occluding value 0 is "
                                          "fixed in input space",
    ("invariance", "shift", "rise"): f"reference-point argument of {KINDERMANS}: RISE fades masked pixels to 0",
    ("invariance", "shift", "score_cam"): f"as gradient x input in {KINDERMANS}: Score-CAM scores x * mask",
    ("invariance", "shift", "deeplift"): f"{KINDERMANS}: DeepLIFT with a zero reference point is not input "
                                         "invariant",
    ("invariance", "shift", "gradient_shap"): f"reference-point argument of {KINDERMANS}: the default baseline 0 "
                                              "is fixed in input space",
    ("invariance", "shift", "guided_ig"): f"reference-point argument of {KINDERMANS}: the path starts at the zero "
                                          "baseline, fixed in input space",
    ("invariance", "shift", "blur_ig"): f"reference-point argument of {KINDERMANS}: the zero-padded blur's start "
                                        "does not move with the input",
}


def known_failure(check: str, variant: str | None, method: str) -> str | None:
    """The citation predicting that ``method`` fails ``check`` (``variant``), or None."""
    return KNOWN_FAILURES.get((check, variant, method)) or KNOWN_FAILURES.get((check, None, method))


__all__ = ["KNOWN_FAILURES", "known_failure"]
