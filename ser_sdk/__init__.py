"""ser-sdk: hear *how* something was said. Speech emotion recognition for voice and chat assistants."""

__version__ = "0.1.0"
