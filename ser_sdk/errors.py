"""Typed errors: every failure a user can cause has its own class and a message that says what to do."""

from __future__ import annotations


class SerError(Exception):
    """Base class of every error ser_sdk raises on purpose."""


class AudioError(SerError):
    """Audio could not be turned into 16 kHz mono samples."""


class EmptyAudioError(AudioError):
    """The input holds no samples at all."""


class AudioDecodeError(AudioError):
    """The input is corrupt, truncated or not audio in a format we read."""


class AudioFormatError(AudioError):
    """The input is audio, but its sample rate, width or shape is not accepted."""


class ModelError(SerError):
    """A model directory is missing, incomplete or does not load."""


class ConfigError(SerError):
    """A configuration file or object is invalid; the message names the field."""


class PluginError(SerError):
    """A plugin could not be found, configured or started."""


class SessionClosedError(SerError):
    """Audio was fed to a session that has already been closed."""
