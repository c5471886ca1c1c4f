"""Model errors the graphs expect and survive."""

import openai

#: A request the model's server refuses (too long, malformed): retrying it unchanged cannot
#: help, so the work it carried fails and is retried on a later run instead.
REFUSED_REQUEST: tuple[type[Exception], ...] = (openai.BadRequestError,)
