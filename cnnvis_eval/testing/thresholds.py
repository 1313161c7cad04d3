"""Every threshold of the user-model checks, in one place, each with its source.

The checks of :mod:`cnnvis_eval.testing.checks` decide relative to controls measured on the
same model and images (docs/architecture.md, rule 10); the numbers below say *how far* from
the control a method must be.  Where a suite of this repository asserts the same property,
the value here is the suite's (``suites/unit/test_testing_checks.py`` checks that they agree).
Sources are a paper and section, or "measured on the minis" with the file that measured it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Threshold:
    """A number a measured value is compared with, and where the number comes from.

    Attributes
    ----------
    value : float
    direction : "below" (pass when value < threshold), "at_most" (value <= threshold) or
        "above" (value > threshold)
    source : str
    """

    value: float
    direction: str
    source: str

    def passes(self, measured: float) -> bool:
        return {"below": measured < self.value, "at_most": measured <= self.value,
                "above": measured > self.value}[self.direction]

    def __str__(self) -> str:
        return f"{ {'below': '<', 'at_most': '<=', 'above': '>'}[self.direction]} {self.value:g}"


_RANDOMIZATION = ("suites/sanity/test_randomization.py (LOGIT_THRESHOLD / FULL_THRESHOLD): mean spearman_abs; "
                  "0.9 means 'unchanged' (Adebayo et al. 2018, Sanity Checks for Saliency Maps, Sec. 3: Spearman "
                  "rank correlation of absolute maps); model-blind controls give 1.0")

THRESHOLDS: dict[str, Threshold] = {
    # -- model-parameter randomization: similarity to the trained model's map (lower = sensitive)
    "randomization.cascading_top": Threshold(0.9, "below", _RANDOMIZATION + " (logits_layer)"),
    "randomization.cascading_half": Threshold(0.9, "below", _RANDOMIZATION + " (step between logits_layer and full; "
                                              "the logits_layer threshold, as no suite asserts this step)"),
    "randomization.cascading_all": Threshold(0.6, "below", _RANDOMIZATION + " (full)"),
    "randomization.independent": Threshold(0.6, "below", _RANDOMIZATION + " (independent_lower)"),
    # the model-blind edge control must stay above this, or the similarity cannot see a
    # model-blind map on this model and the verdict is inconclusive
    "randomization.control": Threshold(0.99, "above", "suites/sanity/test_negative_controls.py: "
                                       "model-blind controls keep spearman_abs > 0.99 under randomization"),
    # -- class sensitivity: similarity of the top class's map and another class's (Sixt et al. 2020)
    "class_sensitivity": Threshold(0.9, "below", "suites/sanity/test_randomization.py (random_logit, "
                                   "LOGIT_THRESHOLD); Sixt et al. 2020, When Explanations Lie, Sec. 5"),
    "class_sensitivity.second_logit": Threshold(0.0, "above", "issue 15: the other class must have a positive "
                                                "logit (confidently predicted), else inconclusive"),
    # -- faithfulness: gain over a random pixel order, in units of the mean |score| of the images
    "faithfulness.deletion": Threshold(0.1, "above", "suites/sanity/test_negative_controls.py: a random order "
                                       "deviates from its reverse by < 0.1 x mean |score|; Petsiuk et al. 2018 (RISE), "
                                       "Sec. 4.1 deletion metric"),
    "faithfulness.insertion": Threshold(0.1, "above", "as faithfulness.deletion; Petsiuk et al. 2018, Sec. 4.1 "
                                        "insertion metric"),
    "faithfulness.road": Threshold(0.1, "above", "as faithfulness.deletion, with noisy linear imputation "
                                   "(Rong et al. 2022, A Consistent and Efficient Evaluation Strategy for "
                                   "Attribution Methods (ROAD), Sec. 4)"),
    # -- input invariance
    "invariance.batch": Threshold(1e-4, "below", "suites/sanity/test_invariance.py BATCH_TOL = 1e-5 on float64 "
                                  "models; 1e-4 for float32 user models (a few float32 ulps of the map's maximum)"),
    "invariance.determinism": Threshold(0.0, "at_most", "exact: suites/sanity/test_invariance.py "
                                        "(assert_array_equal for the same seed)"),
    "invariance.shift": Threshold(3e-3, "below", "suites/sanity/test_invariance.py SHIFT_TOL (relative L1; "
                                  "invariant methods <= 3.2e-4, non-invariant >= 2.7e-2 on the minis); "
                                  "Kindermans et al. 2017, The (un)reliability of saliency methods, Sec. 3"),
    # -- stability: max-sensitivity (Yeh et al. 2019, On the (In)fidelity and Sensitivity of Explanations,
    #    Sec. 4), relative L1 change of the map under noise that keeps the prediction
    "stability": Threshold(0.5, "below", "measured on the minis: the plain gradient moves 0.27 on mini_vgg "
                           "(suites/unit/test_testing_checks.py::test_stability_gradient_on_a_mini); half the "
                           "map's L1 mass moved by 2% input noise means the map is not a property of the image"),
    "stability.noise": Threshold(0.02, "below", "noise amplitude as a fraction of the input range "
                                 "(Yeh et al. 2019 use a small ball; 2% keeps the minis' predictions)"),
    # -- completeness / conservation where the method claims it
    "conservation.relevance": Threshold(1e-3, "below", "suites/sanity/test_conservation.py TOL (deep Taylor, "
                                        "LRP-alpha1-beta0; Montavon et al. 2017, Sec. 3)"),
    "conservation.integrated_gradients": Threshold(0.05, "below", "Sundararajan et al. 2017, Axiomatic "
                                                   "Attribution for Deep Networks, Sec. 3: check completeness "
                                                   "to within 5% and raise the step count otherwise"),
    # -- localization, only with masks: margin over the seeded random explainer (chance)
    "localization.pointing_game": Threshold(0.3, "above", "suites/sanity/test_negative_controls.py: Grad-CAM "
                                            "beats the random explainer's pointing game by > 0.3"),
    "localization.relevance_mass": Threshold(0.1, "above", "5x the random explainer's deviation from chance "
                                             "(0.02) in suites/sanity/test_negative_controls.py"),
    # -- cost: ratio to one compiled forward+backward pass (docs/architecture.md, rule 7)
    "cost": Threshold(2000.0, "below", "a budget, not a literature value: LIME/RISE at their defaults run "
                      "~1000 forward passes per image"),
}


def threshold(key: str) -> Threshold:
    """The threshold named ``key`` (e.g. ``"randomization.cascading_top"``)."""
    return THRESHOLDS[key]


__all__ = ["THRESHOLDS", "Threshold", "threshold"]
