"""Research tooling built on the library: speed benchmarks and accuracy protocols.

``resnet-keras benchmark`` (:mod:`~resnet_keras.experiments.benchmark`) and
``resnet-keras results`` (:mod:`~resnet_keras.experiments.results`). These
modules import the library; the library never imports them.
"""
