"""Evaluation: how the book scores fields and forecasts.

- :mod:`physfm.eval.metrics`     VRMSE and binned spectral error, exactly The Well's definitions
- :mod:`physfm.eval.statistics`  statistics that judge generated fields against true ones
- :mod:`physfm.eval.forecast`    autoregressive rollouts scored per lead time, the persistence baseline
- :mod:`physfm.eval.uncertainty` paired bootstrap intervals of a reduction over seeds and windows
"""
