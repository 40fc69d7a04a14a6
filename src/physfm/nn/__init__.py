"""Networks: the layers and models the book builds, each dimension-generic where the concept is.

- :mod:`physfm.nn.layers`       the N-d convolution maps and parameter counts every module shares
- :mod:`physfm.nn.compression`  causal convolutions with run-time strides (flexible compression)
- :mod:`physfm.nn.tokeniser`    the autoencoder tokeniser built from compression blocks
- :mod:`physfm.nn.scan`         the selective scan and the Mamba block
- :mod:`physfm.nn.fno`          N-d spectral convolution, FNO, FNO decoder
- :mod:`physfm.nn.lora`         LoRA for Linear/ConvNd, exact merge and unmerge
- :mod:`physfm.nn.dynamics`     next-frame models in the tokeniser's latent space (and Tadpole's fine-tuning)
- :mod:`physfm.nn.pdefm`        a PDE-FM-style model across systems
- :mod:`physfm.nn.flow`         flow matching in a latent space
"""
