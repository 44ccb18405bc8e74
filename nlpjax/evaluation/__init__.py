"""Evaluation metrics computed on the host from model outputs."""
