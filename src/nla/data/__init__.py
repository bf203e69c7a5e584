"""Corpora and activation datasets."""
