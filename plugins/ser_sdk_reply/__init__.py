"""Reply adaptation: tone instructions for an LLM, SSML prosody for TTS, escalation to a human."""

from .config import DEFAULT_TEMPLATES, ProsodyHint, ReplyConfig, ReplyTemplate
from .plugin import ReplyPlugin

__all__ = ["DEFAULT_TEMPLATES", "ProsodyHint", "ReplyConfig", "ReplyPlugin", "ReplyTemplate"]
