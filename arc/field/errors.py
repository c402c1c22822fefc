"""Errors raised by the field (INR) code for bad input."""
from __future__ import annotations


class FieldInputError(ValueError):
    """An image, position set or query set that the field cannot represent (NaN, too small, wrong shape)."""


class DecoderFileError(ValueError):
    """A decoder checkpoint that is missing, corrupt, or not an arc decoder."""
