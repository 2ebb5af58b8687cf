from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postway.errors import InvalidInput
from postway.mta.verp import make_return_path, parse_return_path

SECRET = "s3cret"
DOMAIN = "bounces.example.com"


@given(st.uuids(), st.booleans())
def test_round_trip_survives_case_folding(u: uuid.UUID, upper: bool):
    addr = make_return_path(u.hex, SECRET, DOMAIN)
    assert addr.startswith("b+") and addr.endswith("@" + DOMAIN) and addr == addr.lower()
    assert parse_return_path(addr.upper() if upper else addr, SECRET, DOMAIN) == u.hex


def test_forgeries_and_strangers_are_rejected():
    did = uuid.uuid4().hex
    addr = make_return_path(did, SECRET, DOMAIN)
    local, domain = addr.split("@")
    other = uuid.uuid4().hex
    assert parse_return_path(f"b+{other}-{local.split('-')[1]}@{domain}", SECRET, DOMAIN) is None
    assert parse_return_path(addr, "other-secret", DOMAIN) is None
    assert parse_return_path(addr, SECRET, "elsewhere.example") is None
    assert parse_return_path(local[:-1] + "a@" + domain, SECRET, DOMAIN) in (None, did)
    assert parse_return_path("postmaster@" + DOMAIN, SECRET, DOMAIN) is None
    assert parse_return_path(f"<{addr}>", SECRET, DOMAIN) == did


def test_dashed_uuid_is_normalised_and_junk_refused():
    u = uuid.uuid4()
    assert make_return_path(str(u), SECRET, DOMAIN) == make_return_path(u.hex, SECRET, DOMAIN)
    with pytest.raises(InvalidInput):
        make_return_path("not-an-id", SECRET, DOMAIN)
