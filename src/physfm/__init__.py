"""physfm: the library under the book *How physics foundation models are built*.

Each module holds one concept (see the book's chapters for the story behind each):

- :mod:`physfm.spectral`  wavenumber grids, band masks, Gaussian random fields
- :mod:`physfm.metrics`   VRMSE and binned spectral error, as in The Well
- :mod:`physfm.profiles`  smoke / cpu / gpu presets for every chapter
- :mod:`physfm.results`   NetCDF results with provenance, written atomically
- :mod:`physfm.runtime`   device choice and seeding
"""

from physfm.runtime import device, seed_everything

__version__ = "0.1.0"
__all__ = ["device", "seed_everything", "__version__"]
