"""Analysis: plots of training runs and model probes."""
