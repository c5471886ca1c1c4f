"""The model boundary: `ChatOpenAI` from the environment, or the offline extractor.

A real boundary of its own because it is the one part tests fake (at its HTTP edge), and
the offline extractor must stand in for a model behind the same chat-model interface.
"""

from llm.factory import ModelChoice, load_chat_model
from llm.offline import OfflineExtractor

__all__ = ["ModelChoice", "OfflineExtractor", "load_chat_model"]
