"""Errors raised by the evals package.

A *dataset* problem (missing path, unreadable file, wrong layout, required columns absent) is one
:class:`DatasetError` that names the path and the layout that was expected. A problem with one *row*
(missing answer, undecodable image, missing video file, wrong option columns) is never raised: the
reader yields a :class:`evals.sample.Sample` whose ``error`` field says what is wrong.
"""

from __future__ import annotations


class DatasetError(Exception):
    """A dataset path that cannot be read as any of the layouts a benchmark accepts."""

    def __init__(self, path, message: str, expected: str | None = None):
        self.path = None if path is None else str(path)
        self.expected = expected
        text = f"{message} (path: {self.path})"
        if expected:
            text += f"\nExpected layout:\n{expected}"
        super().__init__(text)


class FlavorError(ValueError):
    """An unknown metric / prompt flavor name."""
