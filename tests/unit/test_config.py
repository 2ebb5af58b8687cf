"""Settings: the README table is generated from them, and defaults resolve sensibly."""

from __future__ import annotations

import re
from pathlib import Path

from postway.config import Settings, settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_table_matches_settings():
    text = README.read_text()
    block = re.search(
        r"<!-- settings-table:start -->\n(.*)\n<!-- settings-table:end -->", text, re.S
    )
    assert block, "README lost its settings-table markers"
    assert block.group(1) == settings_table(), "regenerate with `postway config table`"


def test_every_setting_is_described():
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_database_url_forms(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.resolved_database_url() == f"sqlite+aiosqlite:///{(tmp_path / 'postway.db').resolve()}"
    s = Settings(database_url="postgresql://u@h:5432/db")
    assert s.resolved_database_url() == "postgresql+asyncpg://u@h:5432/db"


def test_secret_key_generated_once_and_private(tmp_path):
    a = Settings(data_dir=tmp_path).resolved_secret_key()
    b = Settings(data_dir=tmp_path).resolved_secret_key()
    assert a == b and len(a) >= 40
    assert (tmp_path / "secret.key").stat().st_mode & 0o077 == 0


def test_env_prefix(monkeypatch):
    monkeypatch.setenv("POSTWAY_HOSTNAME", "mx1.example.net")
    monkeypatch.setenv("POSTWAY_ALLOW_PRIVATE_RELAYS", "1")
    s = Settings()
    assert s.hostname == "mx1.example.net" and s.allow_private_relays is True
