"""Packaged fonts (see README.md): the Roboto timestamp font written into tiny checkpoints."""
