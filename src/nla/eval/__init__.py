"""Evaluation: fidelity metrics and the controls they are judged against."""
