"""A fast OpenAI-compatible fake upstream that validates like OpenAI and injects faults on demand."""

from gateway.mock_upstream.app import create_mock_app, run_mock
from gateway.mock_upstream.replies import MOCK_DATED_MODELS, mock_reply, mock_usage

__all__ = ["MOCK_DATED_MODELS", "create_mock_app", "mock_reply", "mock_usage", "run_mock"]
