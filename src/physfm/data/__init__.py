"""Data: PDE systems generated on the fly, their Fourier grids, and the streams that feed training.

- :mod:`physfm.data.spectral`  wavenumber grids, dealiasing, FFT helpers, Gaussian random fields
- :mod:`physfm.data.pde`       PDE systems and the batched ETDRK4 pseudo-spectral stepper
- :mod:`physfm.data.spec`      one specification of a system: name, coefficient ranges, generator options
- :mod:`physfm.data.normalise` per-system normalisation statistics, estimated once from a separate sample
- :mod:`physfm.data.streams`   crops and windows streamed from a refreshed ring buffer
- :mod:`physfm.data.mixture`   temperature-scaled sampling across systems
- :mod:`physfm.data.well`      The Well's HDF5 layout, read and written
"""
