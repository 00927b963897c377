from __future__ import annotations

import numpy as np
import pytest
from helpers import ScriptedClassifier, voiced_bursts
from pydantic import ValidationError
from ser_sdk_reply import DEFAULT_TEMPLATES, ReplyPlugin

from ser_sdk.events import LABELS, EmotionEvent, EmotionScores, Prosody, ReplyAdvice, SessionState


def scores_for(label: str, p: float) -> EmotionScores:
    """``p`` on ``label``, the rest spread evenly over the other three emotions."""
    rest = (1.0 - p) / 3
    return EmotionScores.from_probs([p if name == label else rest for name in LABELS])


def emotion(label: str, p: float, start: float = 0.0) -> EmotionEvent:
    return EmotionEvent.from_scores(
        scores_for(label, p), session_id="s", start=start, end=start + 2.0, model_id="scripted"
    )


def session(
    mood: EmotionScores, recent: list[EmotionEvent] | None = None, utterances: int = 3
) -> SessionState:
    return SessionState(
        session_id="s",
        sample_rate=16000,
        utterances=utterances,
        mood=mood,
        recent=recent or [],
        last_emotion=(recent or [None])[-1],
    )


def advice(text: str = "Let me check that for you.") -> ReplyAdvice:
    return ReplyAdvice(text=text, tone_instructions=["You are a helpful support assistant."])


@pytest.mark.parametrize("label", ["angry", "happy", "sad"])
async def test_each_emotion_gets_its_template(label: str) -> None:
    plugin = ReplyPlugin()
    result = await plugin.adapt_reply(advice(), session(scores_for(label, 0.8)))
    assert result is not None
    template = DEFAULT_TEMPLATES[label]
    assert result.tone_instructions == ["You are a helpful support assistant.", *template.tone]
    assert template.prosody is not None
    assert result.prosody == Prosody(**template.prosody.model_dump())
    assert result.text == "Let me check that for you."
    assert result.escalate is False
    assert result.hints["mood"]["label"] == label
    assert result.hints["mood"]["confidence"] == pytest.approx(0.8, abs=1e-3)
    assert f'rate="{template.prosody.rate}"' in result.ssml()


async def test_emotion_specific_wording_and_prosody() -> None:
    plugin = ReplyPlugin()
    angry = await plugin.adapt_reply(advice(), session(scores_for("angry", 0.9)))
    sad = await plugin.adapt_reply(advice(), session(scores_for("sad", 0.9)))
    happy = await plugin.adapt_reply(advice(), session(scores_for("happy", 0.9)))
    assert angry and sad and happy
    assert any("calm" in line for line in angry.tone_instructions)
    assert any("gentle" in line for line in sad.tone_instructions)
    assert any("upbeat" in line for line in happy.tone_instructions)
    assert angry.prosody and angry.prosody.volume == "soft" and angry.prosody.pitch == "low"
    assert happy.prosody and happy.prosody.pitch.startswith("+")


async def test_neutral_mood_adds_only_the_mood_hint() -> None:
    original = advice()
    result = await ReplyPlugin().adapt_reply(original, session(scores_for("neutral", 0.85)))
    assert result is not None
    assert result.tone_instructions == original.tone_instructions
    assert result.prosody is None
    assert result.hints["mood"]["label"] == "neutral"


async def test_an_unsure_model_leaves_the_reply_alone() -> None:
    plugin = ReplyPlugin({"min_confidence": 0.5})
    assert await plugin.adapt_reply(advice(), session(scores_for("angry", 0.45))) is None
    assert await plugin.adapt_reply(advice(), session(EmotionScores.uniform())) is None
    # No utterance heard yet: nothing to go on, whatever the mood says.
    assert await plugin.adapt_reply(advice(), session(scores_for("sad", 0.9), utterances=0)) is None
    # A stricter bound turns a fairly sure mood into "unsure".
    strict = ReplyPlugin({"min_confidence": 0.9})
    assert await strict.adapt_reply(advice(), session(scores_for("happy", 0.8))) is None


async def test_sustained_anger_suggests_a_human() -> None:
    plugin = ReplyPlugin()
    angry_run = [emotion("neutral", 0.9, 0.0), *(emotion("angry", 0.8, 3.0 * i) for i in range(1, 4))]
    result = await plugin.adapt_reply(advice(), session(scores_for("angry", 0.75), angry_run))
    assert result is not None
    assert result.escalate is True
    assert result.escalation_reason is not None and "last 3 utterances" in result.escalation_reason
    assert result.tone_instructions[-1] == plugin.config.escalation_instruction

    # Anger that was interrupted by a calm utterance is not sustained.
    broken = [emotion("angry", 0.8), emotion("angry", 0.8, 3.0), emotion("neutral", 0.9, 6.0)]
    result = await plugin.adapt_reply(advice(), session(scores_for("angry", 0.6), broken))
    assert result is not None and result.escalate is False

    # Too few utterances so far.
    result = await plugin.adapt_reply(advice(), session(scores_for("angry", 0.8), angry_run[-2:]))
    assert result is not None and result.escalate is False


async def test_escalation_is_configurable() -> None:
    run = [emotion("angry", 0.7, 3.0 * i) for i in range(2)]
    eager = ReplyPlugin({"escalate_after": 2, "escalation_instruction": "Offer a supervisor."})
    result = await eager.adapt_reply(advice(), session(scores_for("angry", 0.7), run))
    assert result is not None and result.escalate and result.tone_instructions[-1] == "Offer a supervisor."

    never = ReplyPlugin({"escalate_after": 0})
    long_run = [emotion("angry", 0.95, 3.0 * i) for i in range(10)]
    result = await never.adapt_reply(advice(), session(scores_for("angry", 0.9), long_run))
    assert result is not None and result.escalate is False

    demanding = ReplyPlugin({"escalate_min_angry": 0.9})
    result = await demanding.adapt_reply(advice(), session(scores_for("angry", 0.8), long_run[:2] + run))
    assert result is not None and result.escalate is False


async def test_escalation_stands_even_when_the_mood_is_not_confident() -> None:
    # Each utterance was clearly angry, but the smoothed mood has not caught up yet.
    plugin = ReplyPlugin({"min_confidence": 0.8})
    run = [emotion("angry", 0.85, 3.0 * i) for i in range(3)]
    result = await plugin.adapt_reply(advice(), session(scores_for("angry", 0.6), run))
    assert result is not None
    assert result.escalate is True
    assert result.prosody is None
    assert "mood" not in result.hints


async def test_custom_templates_replace_only_the_emotions_named() -> None:
    plugin = ReplyPlugin(
        {
            "templates": {
                "angry": {"tone": ["Apologise first."], "prosody": {"rate": "slow", "pitch": "-2st"}},
                "neutral": {"tone": ["Be concise."]},
            }
        }
    )
    angry = await plugin.adapt_reply(advice(), session(scores_for("angry", 0.9)))
    neutral = await plugin.adapt_reply(advice(), session(scores_for("neutral", 0.9)))
    sad = await plugin.adapt_reply(advice(), session(scores_for("sad", 0.9)))
    assert angry and neutral and sad
    assert angry.tone_instructions[-1] == "Apologise first."
    assert angry.prosody == Prosody(rate="slow", pitch="-2st", volume="medium")
    assert neutral.tone_instructions[-1] == "Be concise." and neutral.prosody is None
    assert sad.tone_instructions[1:] == DEFAULT_TEMPLATES["sad"].tone


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="rate"):
        ReplyPlugin({"templates": {"angry": {"prosody": {"rate": "very slow"}}}})
    with pytest.raises(ValidationError, match="pitch"):
        ReplyPlugin({"templates": {"sad": {"prosody": {"pitch": "5%"}}}})
    with pytest.raises(ValidationError, match="furious"):
        ReplyPlugin({"templates": {"furious": {"tone": ["x"]}}})
    with pytest.raises(ValidationError, match="min_confidence"):
        ReplyPlugin({"min_confidence": 2})
    with pytest.raises(ValidationError, match="tone_lines"):
        ReplyPlugin({"templates": {"sad": {"tone_lines": ["x"]}}})


# ----------------------------------------------------------------------------- through the engine


async def test_turn_loop_through_the_engine() -> None:
    from ser_sdk import EmotionEngine

    classifier = ScriptedClassifier([scores_for("angry", 0.9)] * 3)
    async with EmotionEngine(classifier, plugins=[ReplyPlugin()]) as engine, engine.session() as session:
        await session.feed(np.zeros(8000, dtype=np.float32))
        first = await session.adapt_reply("Hello, how can I help?")
        assert first.tone_instructions == [] and first.prosody is None and first.applied_by == []

        await session.feed(voiced_bursts(1))
        one_angry = await session.adapt_reply("Let me look into it.")
        # One utterance moves the smoothed mood only part of the way: still below the bound.
        assert session.state.utterances == 1
        assert one_angry.applied_by == [] and one_angry.escalate is False

        for _ in range(2):
            await session.feed(voiced_bursts(1))
        advice = await session.adapt_reply("I understand. Let me fix this.")

    assert session.state.utterances == 3
    assert advice.applied_by == ["reply"]
    assert advice.escalate is True
    assert advice.tone_instructions[: len(DEFAULT_TEMPLATES["angry"].tone)] == DEFAULT_TEMPLATES["angry"].tone
    assert advice.prosody is not None and advice.prosody.rate == "90%"
    assert advice.hints["mood"]["label"] == "angry"
    assert advice.ssml().startswith('<speak><prosody rate="90%" pitch="low" volume="soft">')
