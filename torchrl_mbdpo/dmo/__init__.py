"""DMO as its paper describes it: policy learning inside a learned pixel world model of Push-T, with no
simulator in the loop (Amigo et al., "Coupled Local and Global World Models for Efficient First Order RL").

The pipeline's parts live together in this package, in the order they run:

- :mod:`.play_data`: a play dataset of image episodes of the real Push-T env (random and noisy scripted
  pushing), written into a TorchRL memory-mapped storage on disk, and its loader.

The simulator-forward DMO of ``algo=dmo`` (``objectives/dmo.py``, ``trainers/dmo.py``, ``modules/decoupled.py``)
is the earlier setting and stays where it is. Submodules are imported on use: importing this package does
not import gym-pusht.
"""

__all__ = ["play_data"]
