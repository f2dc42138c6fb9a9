"""The dialect-sensitive parts of moderation on the embedded SQLite database: the registry's
revision counter, opt-out refresh, incidents, strikes and suspension."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.accounts import service as accounts
from app.accounts.service import Principal
from app.config import Settings, demo_model_spec
from app.db import Database
from app.errors import AppError
from app.generation.schemas import GenerationRequest
from app.migrate import upgrade_head
from app.moderation import service as moderation


async def test_registry_refresh_and_strikes_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ponyserve.db'}"
    upgrade_head(url)
    settings = Settings(database_url=url, data_dir=tmp_path, moderation_strike_threshold=2)
    spec = demo_model_spec(tmp_path / "demo")
    db = Database(url)
    try:
        async with db.unit_of_work() as session:
            account = await accounts.create_account(session, name="sqlite partner")
            key, _ = await accounts.create_key(session, account_id=account.id)
        principal = Principal(key=key, account=account)
        moderator = moderation.Moderator(db, settings, moderation.build_policy(settings, [spec]))
        await moderator.refresh()
        assert moderator.revision == 0  # nothing registered yet
        assert await moderator.refresh() is False

        async with db.unit_of_work() as session:
            entry = await moderation.create_optout(session, principal, name="Orla Venn", aliases=["orlavenn"],
                                                   require_context=False)
            result = await moderation.import_optouts(session, principal, "Tam Brisk,tambrisk\nOrla Venn,o. venn\n")
        assert (result.created, result.updated, result.revision) == (1, 1, 2)
        assert await moderator.refresh() is True
        assert moderator.revision == 2

        async def refused(prompt: str) -> str:
            with pytest.raises(AppError) as caught:
                await moderator.screen(principal, GenerationRequest(prompt=prompt), spec, endpoint="test")
            return caught.value.code

        assert await refused("a castle by O. Venn") == "artist_opted_out"
        assert await refused("tambrisk style") == "artist_opted_out"
        async with db.unit_of_work() as session:
            await moderation.delete_optout(session, principal, entry.id)
        assert await moderator.refresh() is True
        screening = await moderator.screen(principal, GenerationRequest(prompt="a castle by O. Venn"), spec,
                                           endpoint="test")
        assert screening.rating == "safe"

        assert await refused("loli") == "content_policy_violation"
        assert await refused("shota") == "content_policy_violation"
        async with db.unit_of_work() as session:
            incidents = await moderation.list_incidents(session, category="csam", account_id=account.id,
                                                        api_key_id=None, since=None, limit=10, offset=0)
            assert [i.suspended_account for i in incidents] == [True, False]
            assert (await accounts.get_account(session, account.id)).status == "suspended"
    finally:
        await db.dispose()
