"""voicemill: turn recordings into a trained, evaluated, exported TTS voice."""

__version__ = "0.1.0"
