"""Datasets, answer extraction and grading, and the built-in arithmetic task."""
