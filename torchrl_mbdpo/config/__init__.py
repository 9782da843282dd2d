"""Hydra entry configs of the console scripts."""
