"""Find and remove irrelevant features (issue 17): detection and retraining.

- :mod:`~cnnvis_eval.remedy.masks` — the irrelevant region as masks: from arrays,
  rectangles, polygons, or proposed from CAM / from channels (the thesis' ``Select_tool``);
- :mod:`~cnnvis_eval.remedy.detect` — per-filter analysis of the last convolutional layer
  and explanation mass on the irrelevant region;
- :mod:`~cnnvis_eval.remedy.features` — the analysed feature map, its activations, the CAM
  weights, masks downsampled to it;
- :mod:`~cnnvis_eval.remedy.train` — the small VGG-style GAP classifier the remedies study;
- :mod:`~cnnvis_eval.remedy.losses` — the PAS, PASA and RRR penalties;
- :mod:`~cnnvis_eval.remedy.replace` — random-crop, inpainting and noise replacement;
- :mod:`~cnnvis_eval.remedy.retrain` — fine-tuning a copy with a remedy, the lambda sweep;
- :mod:`~cnnvis_eval.remedy.results` — the table per data set x remedy, before and after
  (``cnnvis-eval remedy``), and the before/after CAM grid.

The data sets with artefacts are :mod:`cnnvis_eval.data.artefacts`.  The user's model is
never modified.
"""

from .detect import FilterReport, MassReport, explanation_mass, filter_analysis
from .features import analysis_layer, class_weights, downsample_masks, feature_maps
from .losses import pas_penalty, pasa_penalty, rrr_penalty
from .masks import MaskSelection, as_masks, augment_masks, propose_from_cam, propose_from_channels
from .replace import inpaint_replace, noise_replace, random_crop_replace
from .results import cam_grid, evaluate, results_html, results_table, sweep_table, true_class_cams
from .retrain import REMEDIES, Sweep, activation_share, lambda_sweep, retrain
from .train import accuracy, build_gap_classifier, train_classifier

__all__ = [
    "REMEDIES",
    "FilterReport",
    "Sweep",
    "activation_share",
    "augment_masks",
    "cam_grid",
    "evaluate",
    "inpaint_replace",
    "lambda_sweep",
    "noise_replace",
    "pas_penalty",
    "pasa_penalty",
    "random_crop_replace",
    "results_html",
    "results_table",
    "retrain",
    "rrr_penalty",
    "sweep_table",
    "MaskSelection",
    "MassReport",
    "accuracy",
    "analysis_layer",
    "as_masks",
    "build_gap_classifier",
    "class_weights",
    "downsample_masks",
    "explanation_mass",
    "feature_maps",
    "filter_analysis",
    "propose_from_cam",
    "propose_from_channels",
    "train_classifier",
    "true_class_cams",
]
