"""Choose the chat model from the environment."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI

from llm.offline import OfflineExtractor

DEFAULT_MODEL = "gpt-4.1-mini"


@dataclass(frozen=True)
class ModelChoice:
    """The model in use and a line that tells the user which one it is."""

    model: BaseChatModel
    label: str
    offline: bool


def load_chat_model(env: Mapping[str, str] | None = None) -> ModelChoice:
    """`ChatOpenAI` when `OPENAI_API_KEY` or `OPENAI_BASE_URL` is set, else the offline extractor.

    `RELAYGRAPH_MODEL` names the model; `OPENAI_BASE_URL` points at any OpenAI-compatible
    server (a local one needs no key).
    """
    env = os.environ if env is None else env
    api_key = env.get("OPENAI_API_KEY")
    base_url = env.get("OPENAI_BASE_URL")
    if not api_key and not base_url:
        return ModelChoice(
            OfflineExtractor(),
            "offline extractor (no OPENAI_API_KEY or OPENAI_BASE_URL set)",
            offline=True,
        )
    name = env.get("RELAYGRAPH_MODEL") or DEFAULT_MODEL
    model = ChatOpenAI(
        model=name,
        api_key=api_key or "not-needed",  # type: ignore[arg-type]
        base_url=base_url,
        temperature=0,
        timeout=120,
        max_retries=2,
    )
    where = f" at {without_secrets(base_url)}" if base_url else ""
    return ModelChoice(model, f"ChatOpenAI {name}{where}", offline=False)


def without_secrets(url: str) -> str:
    """`url` as it may be shown (`/info`, logs): no user, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:  # a port that is not a number
        netloc = host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
