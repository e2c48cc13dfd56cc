"""Settings: read from the environment, documented in the README exactly as the code has them."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings, settings_table_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_matches_the_code():
    text = README.read_text()
    start = text.index("<!-- settings-table -->\n") + len("<!-- settings-table -->\n")
    end = text.index("<!-- /settings-table -->")
    assert text[start:end] == settings_table_markdown()


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RAY_HEAD_PORT", "7000")
    monkeypatch.setenv("MAX_ARMS", "3")
    settings = Settings()
    assert settings.ray_head_port == 7000
    assert settings.limits().max_arms == 3
