"""The `intake` fixture: the bounce intake on a free loopback port, on the `env` runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from bounce_support import FEEDBACK

from postway.bounces.intake import BounceIntake


@pytest.fixture
async def intake(env) -> AsyncIterator[BounceIntake]:
    env.rt.settings.feedback_address = FEEDBACK
    it = BounceIntake(env.rt.db, env.rt.settings)
    await it.start("127.0.0.1", 0)
    yield it
    await it.stop()
