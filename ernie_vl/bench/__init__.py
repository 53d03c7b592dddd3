"""Measurement tooling for the model: ``python -m ernie_vl.bench <subcommand>`` (see ``__main__``).

``generate`` (engine vs transformers, with the ``roofline`` floor), ``experts`` (expert-parallel replicas),
``preprocess`` (processor vs transformers) and ``memory`` (weights and KV capacity by card). Nothing in the model
package imports this one.
"""
