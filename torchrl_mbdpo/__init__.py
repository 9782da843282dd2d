"""MBDPO on TorchRL."""
