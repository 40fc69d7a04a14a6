"""physfm: the library under the book *How physics foundation models are built*.

Components are grouped by kind, experiments kept apart from them; each module holds one concept
(see the book's chapters for the story behind each):

- :mod:`physfm.data`         PDE systems, their Fourier grids, on-the-fly streams of crops and windows
- :mod:`physfm.nn`           compression blocks, the tokeniser, the selective scan, the FNO, LoRA,
  next-frame models, PDE-FM, flow matching
- :mod:`physfm.eval`         VRMSE and spectral error (The Well's definitions), sample statistics
- :mod:`physfm.training`     the training loop, the model cache, tokeniser pre-training
- :mod:`physfm.experiments`  one module per chapter experiment
- :mod:`physfm.profiles`     smoke / cpu / gpu / paper presets for every chapter
- :mod:`physfm.results`      NetCDF results with provenance, written atomically
- :mod:`physfm.runtime`      device choice, seeding, worker processes
- :mod:`physfm.viz`          the book's figures

Imports run one way: ``experiments`` use ``training``, ``eval``, ``nn`` and ``data``; ``training``
uses ``nn``, ``eval`` and ``data``; ``nn`` and ``eval`` use ``data`` at most.
"""

from physfm.runtime import device, seed_everything

__version__ = "0.1.0"
__all__ = ["device", "seed_everything", "__version__"]
