"""Model errors the graphs expect and survive."""

import openai

#: A request the model's server refuses (too long, malformed): retrying it unchanged cannot
#: help, so the work it carried fails and is retried on a later run instead.
REFUSED_REQUEST: tuple[type[Exception], ...] = (openai.BadRequestError,)


def describe(exc: Exception) -> str:
    """A model error as the run log shows it: its type, the API's error code, the message."""
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}{f' ({code})' if code else ''}: {exc}"
