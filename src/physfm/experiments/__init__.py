"""Experiments: one module per chapter experiment.

- :mod:`physfm.experiments.pretraining`  does pre-training the tokeniser pay off? (Sotoudeh et al.)
- :mod:`physfm.experiments.finetuning`   fine-tuning a pre-trained autoencoder for dynamics (Tadpole)
- :mod:`physfm.experiments.pdefm`        one model across PDE systems (PDE-FM)
"""
