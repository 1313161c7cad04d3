"""The pytest entry point of cnnvis_eval (``pytest11: pytest_cnnvis_eval``): the ``--cnnvis-*`` options.

This module is a top-level module on purpose: it imports only pytest, not the ``cnnvis_eval``
package (whose ``__init__`` loads TensorFlow), so a repository that has cnnvis_eval installed
pays nothing in a pytest run that does not ask for the checks.  When ``--cnnvis-model`` is given,
:func:`pytest_configure` registers the plugin proper, :mod:`cnnvis_eval.testing.plugin`, which
validates the options, collects the checks and reports the verdicts.  Disable it with
``-p no:pytest_cnnvis_eval``.
"""

from __future__ import annotations

PLUGIN_NAME = "cnnvis_eval.testing.plugin"


def pytest_addoption(parser):
    group = parser.getgroup("cnnvis_eval", "cnnvis_eval: sanity checks of saliency maps on your model")
    group.addoption("--cnnvis-model", action="append", default=[], metavar="FILE",
                    help="a saved Keras model (.keras or .h5) to check; repeat for several models")
    group.addoption("--cnnvis-images", default=None, metavar="PATH",
                    help="a folder of JPEG/PNG images, or an .npz with an 'images' array")
    group.addoption("--cnnvis-methods", default=None, metavar="LIST",
                    help="comma-separated method names (default: cnnvis_eval.testing.session.DEFAULT_METHODS, "
                         "saliency,integrated_gradients,guided_backprop,grad_cam,lrp_epsilon)")
    group.addoption("--cnnvis-checks", default=None, metavar="LIST",
                    help="comma-separated checks or check.variant (default: all)")
    group.addoption("--cnnvis-masks", default=None, metavar="PATH",
                    help="ground-truth masks: a folder of PNGs named like the images, or an .npz with 'masks'")
    group.addoption("--cnnvis-preprocess", default=None, metavar="MODE",
                    help="0-255 (default) | -1,1 | 0-1 | caffe | torch | module:function")
    group.addoption("--cnnvis-classes", default=None, metavar="LIST", help="comma-separated class names")
    group.addoption("--cnnvis-output", default=None, metavar="NAME",
                    help="the output layer to explain, for models with several outputs")
    group.addoption("--cnnvis-custom-object", action="append", default=[], metavar="MODULE:NAME",
                    help="a class the model files need that is not registered with Keras (a subclassed "
                         "model, a custom layer); repeatable")
    group.addoption("--cnnvis-input-shape", default=None, metavar="H,W,C",
                    help="the input shape of a subclassed model whose file does not record one")
    group.addoption("--cnnvis-param", action="append", default=[], metavar="METHOD.NAME=VALUE",
                    help="a method parameter (VALUE read as JSON, else text), e.g. lime.num_samples=1000; "
                         "repeatable (default: the comparison grid's settings, LIME 200 samples)")
    group.addoption("--cnnvis-report", action="store", default=None, metavar="DIR",
                    help="write the measurements, verdicts and an HTML report to DIR")


def pytest_configure(config):
    """Load the checks only when asked for (``--cnnvis-model``)."""
    if not config.getoption("--cnnvis-model"):
        return
    import importlib

    plugin = importlib.import_module(PLUGIN_NAME)
    if not config.pluginmanager.is_registered(plugin):
        # registered during pytest_configure: pluggy replays the configure call to it
        config.pluginmanager.register(plugin, PLUGIN_NAME)
