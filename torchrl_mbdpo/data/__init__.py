from .replay_buffer import TRANSITION_KEYS, EpisodeWriter, make_replay_buffer

__all__ = ["TRANSITION_KEYS", "EpisodeWriter", "make_replay_buffer"]
