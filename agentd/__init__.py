"""agentd: a session daemon for AI chat in editors."""

__version__ = "0.1.0"
