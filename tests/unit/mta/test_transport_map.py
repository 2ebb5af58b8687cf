from __future__ import annotations

import pytest

from postway.errors import InvalidInput
from postway.mta.transport import Relay, parse_transport


def test_parse_and_lookup():
    tm = parse_transport("example.net=127.0.0.1:2525, .example.org=mx.test,*=[::1]:2526")
    assert tm.lookup("EXAMPLE.net.") == Relay("127.0.0.1", 2525)
    assert tm.lookup("a.b.example.org") == Relay("mx.test", 25)
    assert tm.lookup("example.org") == Relay("::1", 2526)  # ".example.org" is subdomains only
    assert str(tm.lookup("other.test")) == "[::1]:2526"
    assert not parse_transport("") and parse_transport("").lookup("x.test") is None


@pytest.mark.parametrize(
    "bad",
    ["example.net", "example.net=", "=127.0.0.1", "x=::1:25", "x=[nothex]:25", "x=h:99999",
     "x=a:1,x=b:2", "*=a,*=b", "bad domain=a"],
)  # fmt: skip
def test_bad_syntax_is_invalid_input(bad):
    with pytest.raises(InvalidInput) as err:
        parse_transport(bad)
    assert err.value.field == "transport"
