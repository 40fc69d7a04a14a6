"""Training: one loop for every chapter, the model cache, and tokeniser pre-training.

- :mod:`physfm.training.loop`       :class:`TrainConfig` and :func:`train` (progress, curves, resumable checkpoints)
- :mod:`physfm.training.cache`      trained models kept in a cache folder, keyed by their configuration
- :mod:`physfm.training.tokeniser`  pre-training the tokeniser on the on-the-fly crop stream
"""

from physfm.training.cache import cache_dir, cached, config_digest
from physfm.training.loop import TrainConfig, train
from physfm.training.tokeniser import RECIPE_KEYS, crops_by_system, evaluate_tokeniser, pretrain_tokeniser, tokeniser_config

__all__ = [
    "TrainConfig",
    "train",
    "cached",
    "cache_dir",
    "config_digest",
    "RECIPE_KEYS",
    "tokeniser_config",
    "pretrain_tokeniser",
    "crops_by_system",
    "evaluate_tokeniser",
]
