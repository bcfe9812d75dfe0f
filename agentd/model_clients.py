"""The configured models and one provider client per endpoint, made on first use (startup
must not import the model SDK: it is loaded in a thread once a model is configured)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from agentd.config import Config, ModelConfig
from agentd.errors import ModelNotConfigured

if TYPE_CHECKING:
    from agentd.provider import ChatProvider

logger = logging.getLogger(__name__)

# How long closing waits for a preload still running (imports take about a second).
PRELOAD_JOIN_S = 10.0


class ModelClients:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._clients: dict[str, ChatProvider] = {}
        # The preload thread may make the default model's client while a turn wants it.
        self._lock = threading.Lock()
        self._preloading: list[threading.Thread] = []

    def resolve(self, *names: str | None) -> ModelConfig:
        """The first model named, else the default; ModelNotConfigured when none is."""
        name = next((n for n in names if n), None)
        model = self.config.resolve_model(name)
        if model is None:
            if name:
                raise ModelNotConfigured(f"unknown model: {name}", data={"model": name})
            raise ModelNotConfigured(
                "no model configured: set AGENTD_MODEL (and OPENAI_BASE_URL / OPENAI_API_KEY) "
                "or default_model in the configuration file"
            )
        return model

    def client(self, model: ModelConfig) -> ChatProvider:
        with self._lock:
            client = self._clients.get(model.provider)
            if client is None:
                from agentd.provider import ChatProvider

                client = ChatProvider(self.config.providers[model.provider])
                self._clients[model.provider] = client
            return client

    def preload(self) -> None:
        """When a model is configured, load in a background thread what the first turn
        would otherwise wait for: the provider's SDK, the default model's client (its
        HTTP transport and TLS context), the tools."""
        if self.config.default_model is None and not self.config.models:
            return

        def load() -> None:
            from agentd.provider import ChatProvider

            try:
                ChatProvider.preload()
                model = self.config.resolve_model(None)
                if model is not None and model.provider in self.config.providers:
                    self.client(model).connect()
                import anyio._backends._asyncio  # noqa: F401  (the SDK's first request)

                import agentd.tool_calls  # noqa: F401
                from agentd.protocol.converter import prepare_hooks

                prepare_hooks()
            except Exception:  # the first turn will report it properly
                logger.debug("provider preload failed", exc_info=True)

        thread = threading.Thread(target=load, name="agentd-preload", daemon=True)
        self._preloading = [t for t in self._preloading if t.is_alive()] + [thread]
        thread.start()

    async def aclose(self) -> None:
        # A preload still importing when the interpreter ends is frozen inside an
        # extension module's code: glibc then aborts the process ("FATAL: exception not
        # rethrown", exit -6, an outside attacker saw 3 in 25 quick exits). It ends first.
        for thread in self._preloading:
            await asyncio.to_thread(thread.join, PRELOAD_JOIN_S)
        for client in self._clients.values():
            try:
                await client.aclose()
            except Exception:
                logger.debug("provider close failed", exc_info=True)
        self._clients.clear()
