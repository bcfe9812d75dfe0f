"""Session titles written by the model after a session's first run."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from agentd import ids
from agentd.config import ModelConfig
from agentd.model_clients import ModelClients
from agentd.protocol import types as t
from agentd.protocol.converter import unstructure
from agentd.session import SessionManager
from agentd.storage.catalog import DEFAULT_TITLE
from agentd.turn import step_cost, usage_from_provider

if TYPE_CHECKING:
    from agentd.provider import ChatProvider

logger = logging.getLogger(__name__)

TITLE_PROMPT = (
    "You write short titles for conversations. Reply with a short title (at most 6 words) "
    "for the user's message: no quotes, no trailing punctuation."
)
TITLE_TIMEOUT_S = 60


async def write_title(
    sessions: SessionManager,
    models: ModelClients,
    session_id: str,
    run_model: ModelConfig,
    user: t.Message,
    *,
    run_failed: bool = False,
) -> None:
    """Title a session after its first run (the title model's usage is logged)."""
    model: ModelConfig | None
    try:
        model = models.resolve(sessions.config.title_model, run_model.id)
        provider = models.client(model)
    except Exception as exc:  # no title model: the first words
        logger.info("no title model (%s): using the first words", exc)
        model, provider = None, None
    if run_failed and model is not None and model.provider == run_model.provider:
        # The provider has just failed the run, and the editor has shown that error:
        # asking it again would only repeat the failure, retries included, after it.
        model, provider = None, None
    title, usage = await generate_title(provider, model, user)
    if model is not None and usage is not None:
        u = usage_from_provider(usage)
        sessions.store.log_for(session_id).append(
            {
                "k": "usage",
                "usage": unstructure(u),
                "cost": str(step_cost(model, u)),
                "at": ids.now_ms(),
            }
        )
    try:
        await sessions.set_title(session_id, title, generated=True)
    except Exception:
        logger.debug("session %s gone before its title was set", session_id)


async def generate_title(
    provider: ChatProvider | None, model: ModelConfig | None, user: t.Message
) -> tuple[str, Any]:
    """(title, the provider's usage or None). A title is never an error: without a
    model, or when the model fails, it is the message's first words."""
    text = " ".join(p.text for p in user.parts if isinstance(p, t.TextPart)).strip()
    fallback = " ".join(text.split()[:8])[:80] or DEFAULT_TITLE
    if provider is None or model is None:
        return fallback, None
    try:
        async with asyncio.timeout(TITLE_TIMEOUT_S):
            answer, usage = await provider.complete_text(
                model=model.upstream,
                messages=[
                    {"role": "system", "content": TITLE_PROMPT},
                    {"role": "user", "content": text[:4000]},
                ],
                max_tokens=32,
            )
    except Exception as exc:
        logger.info("title generation failed (%s): using the first words", exc)
        return fallback, None
    cleaned = " ".join(answer.strip().strip("\"'").split())[:80].rstrip(".!?:;")
    return cleaned or fallback, usage
