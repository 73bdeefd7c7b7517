"""The subscription settings: validated like every other setting."""

from __future__ import annotations

import pytest

from cryptovault.config import ConfigError, load_settings


def load(env: dict[str, str], tmp_path):
    return load_settings({"DATA_DIR": str(tmp_path), **env}, env_file=None)


def test_subscriptions_are_grouped_and_uncompressed_by_default(tmp_path):
    s = load({}, tmp_path)
    assert s.subscription_mode == "grouped"
    assert s.subscription_send_queue == 1000
    assert s.ws_per_message_deflate is False


def test_subscription_settings_are_read(tmp_path):
    s = load(
        {
            "SUBSCRIPTION_MODE": "naive",
            "SUBSCRIPTION_SEND_QUEUE": "50",
            "WS_PER_MESSAGE_DEFLATE": "true",
        },
        tmp_path,
    )
    assert (s.subscription_mode, s.subscription_send_queue) == ("naive", 50)
    assert s.ws_per_message_deflate is True


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SUBSCRIPTION_MODE": "fast"}, "SUBSCRIPTION_MODE"),
        ({"SUBSCRIPTION_SEND_QUEUE": "0"}, "SUBSCRIPTION_SEND_QUEUE"),
        ({"SUBSCRIPTION_SEND_QUEUE": "many"}, "SUBSCRIPTION_SEND_QUEUE"),
        ({"WS_PER_MESSAGE_DEFLATE": "maybe"}, "WS_PER_MESSAGE_DEFLATE"),
    ],
)
def test_a_bad_subscription_setting_names_its_variable(tmp_path, env, variable):
    with pytest.raises(ConfigError, match=variable):
        load(env, tmp_path)
