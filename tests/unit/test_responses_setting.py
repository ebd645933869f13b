"""GATEWAY_RESPONSES: translate (the default) or passthrough."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, Settings


def test_translate_is_the_default_and_passthrough_can_be_chosen() -> None:
    assert Settings.from_env({}).responses_mode == "translate"
    assert Settings.from_env({"GATEWAY_RESPONSES": " Passthrough "}).responses_mode == "passthrough"


def test_any_other_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_RESPONSES"):
        Settings.from_env({"GATEWAY_RESPONSES": "emulate"})
