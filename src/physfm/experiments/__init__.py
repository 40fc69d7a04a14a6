"""Experiments: one module per chapter experiment.

- :mod:`physfm.experiments.scan`         selectivity, speed and latent dynamics of the selective scan
- :mod:`physfm.experiments.fno`          operator learning across resolutions, the FNO decoder of latents
- :mod:`physfm.experiments.pretraining`  does pre-training the tokeniser pay off? (Sotoudeh et al.)
- :mod:`physfm.experiments.finetuning`   fine-tuning a pre-trained autoencoder for dynamics (Tadpole)
- :mod:`physfm.experiments.generating`   flow matching in the tokeniser's latent space
- :mod:`physfm.experiments.pdefm`        one model across PDE systems (PDE-FM)
"""
