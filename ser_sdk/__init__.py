"""ser-sdk: hear *how* something was said.

Speech emotion recognition for voice and chat assistants: WebRTC VAD cuts live
audio into utterances, a SpeechBrain model scores each as angry, happy, sad or
neutral, and plugins receive every result through async hooks.

    from ser_sdk import EmotionEngine, Plugin, EmotionEvent
"""

from .audio import SAMPLE_RATE, AudioStream, load_audio
from .config import EngineConfig, SdkConfig, load_config
from .engine import EmotionEngine, Session
from .errors import (
    AudioDecodeError,
    AudioError,
    AudioFormatError,
    ConfigError,
    EmptyAudioError,
    ModelError,
    PluginError,
    SerError,
    SessionClosedError,
)
from .events import (
    LABELS,
    EmotionEvent,
    EmotionScores,
    Event,
    Prosody,
    ReplyAdvice,
    SessionEndEvent,
    SessionStartEvent,
    SessionState,
    SpeechStartEvent,
    Utterance,
    UtteranceEvent,
)
from .model import Classifier, EmotionModel, ModelInfo, default_model_dir
from .plugin import Plugin, PluginConfig, PluginContext
from .plugins import discover_plugins
from .vad import VadConfig, VoiceSegmenter

__version__ = "0.1.0"

__all__ = [
    "LABELS",
    "SAMPLE_RATE",
    "AudioDecodeError",
    "AudioError",
    "AudioFormatError",
    "AudioStream",
    "Classifier",
    "ConfigError",
    "EmotionEngine",
    "EmotionEvent",
    "EmotionModel",
    "EmotionScores",
    "EmptyAudioError",
    "EngineConfig",
    "Event",
    "ModelError",
    "ModelInfo",
    "Plugin",
    "PluginConfig",
    "PluginContext",
    "PluginError",
    "Prosody",
    "ReplyAdvice",
    "SdkConfig",
    "SerError",
    "Session",
    "SessionClosedError",
    "SessionEndEvent",
    "SessionStartEvent",
    "SessionState",
    "SpeechStartEvent",
    "Utterance",
    "UtteranceEvent",
    "VadConfig",
    "VoiceSegmenter",
    "default_model_dir",
    "discover_plugins",
    "load_audio",
    "load_config",
]
