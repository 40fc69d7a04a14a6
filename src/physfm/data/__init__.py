"""Data: PDE systems generated on the fly, their Fourier grids, and the streams that feed training.

- :mod:`physfm.data.spectral`  wavenumber grids, dealiasing, FFT helpers, Gaussian random fields
- :mod:`physfm.data.pde`       PDE systems and the batched ETDRK4 pseudo-spectral stepper
- :mod:`physfm.data.streams`   crops and windows streamed from a refreshed ring buffer
"""
