"""Broker URLs: parsing, option conversion, password masking and scheme lookup."""

from __future__ import annotations

import math
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wireframe.jobs.broker import (
    BrokerURL,
    BrokerURLError,
    mask_password,
    open_broker,
    parse_broker_url,
)
from wireframe.jobs.brokers.memory import MemoryBroker, parse_memory_url


def test_defaults() -> None:
    url = parse_broker_url("redis://127.0.0.1:6379/0")
    assert url == BrokerURL(
        raw="redis://127.0.0.1:6379/0",
        scheme="redis",
        host="127.0.0.1",
        port=6379,
        path="/0",
        username=None,
        password=None,
        lease=30.0,
        max_deliveries=5,
        options={},
    )
    assert str(url) == "redis://127.0.0.1:6379/0"


def test_common_options_are_converted() -> None:
    url = parse_broker_url("sqlite:////tmp/x/jobs.db?lease=2.5&max_deliveries=3")
    assert (url.lease, url.max_deliveries) == (2.5, 3)
    assert isinstance(url.lease, float)
    assert url.path == "//tmp/x/jobs.db"


def test_extra_options_with_defaults_and_converters() -> None:
    def colour(text: str) -> str:
        if text not in ("red", "blue"):
            raise ValueError("must be red or blue")
        return text

    extra = {"colour": (colour, "red"), "size": (int, 1)}
    assert parse_broker_url("x://h", extra).options == {"colour": "red", "size": 1}
    assert parse_broker_url("x://h?size=4&colour=blue", extra).options == {
        "colour": "blue",
        "size": 4,
    }
    with pytest.raises(BrokerURLError, match=r"option colour='green': must be red or blue"):
        parse_broker_url("x://h?colour=green", extra)


def test_unknown_option_is_named_with_the_known_ones() -> None:
    with pytest.raises(
        BrokerURLError, match=r"unknown option 'leese'.*accepts lease, max_deliveries"
    ):
        parse_broker_url("memory://?leese=3")


def test_repeated_option() -> None:
    with pytest.raises(BrokerURLError, match=r"option 'lease' is given twice"):
        parse_broker_url("memory://?lease=1&lease=2")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("", "malformed"),
        ("jobs.db", "malformed"),
        ("memory:/x", "malformed"),
        ("://host", "no valid scheme"),
        ("redis://[::1/0", "malformed"),
        ("redis://h:99999/0", "bad port"),
        ("redis://h:abc/0", "bad port"),
        ("redis://h/0#frag", "fragment"),
    ],
)
def test_malformed_urls(url: str, match: str) -> None:
    with pytest.raises(BrokerURLError, match=match):
        parse_broker_url(url)


def test_a_url_that_is_not_a_string() -> None:
    with pytest.raises(BrokerURLError, match="malformed"):
        parse_broker_url(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("lease=abc", r"lease='abc' is not a number"),
        ("lease=", r"lease='' is not a number"),
        ("lease=0", "must be a positive number"),
        ("lease=-1", "must be a positive number"),
        ("lease=nan", "must be a positive number"),
        ("lease=inf", "must be a positive number"),
        ("max_deliveries=1.5", r"max_deliveries='1.5' is not a whole number"),
        ("max_deliveries=x", "is not a whole number"),
        ("max_deliveries=0", "must be at least 1"),
    ],
)
def test_bad_numbers(query: str, match: str) -> None:
    with pytest.raises(BrokerURLError, match=match) as info:
        parse_broker_url(f"memory://name?{query}")
    assert "memory://name?" in str(info.value), "the error quotes the URL"


def test_password_is_masked_in_str_and_repr() -> None:
    url = parse_broker_url("redis://alice:s3cret@h:6380/1?lease=5")
    assert (url.username, url.password) == ("alice", "s3cret")
    assert str(url) == "redis://alice:***@h:6380/1?lease=5"
    assert "s3cret" not in repr(url)


def test_percent_encoded_password_is_masked() -> None:
    url = parse_broker_url("redis://:s3cr%40t@localhost/0")
    assert url.password == "s3cr@t"
    assert "s3cr" not in str(url) and "s3cr" not in repr(url)
    assert str(url) == "redis://:***@localhost/0"


def test_password_is_masked_in_errors() -> None:
    with pytest.raises(BrokerURLError) as info:
        parse_broker_url("redis://u:hunter2@h/0?nope=1")
    assert "hunter2" not in str(info.value) and "u:***@h" in str(info.value)
    with pytest.raises(BrokerURLError) as info:
        open_broker("ftp://u:hunter2@h/")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://h/0", "redis://h/0"),
        ("redis://user@h/0", "redis://user@h/0"),
        ("redis://user@h:6379/0", "redis://user@h:6379/0"),
        # an '@' in the query: the password might run up to it, so it is hidden too
        ("redis://u:p@h/0?x=a:b@c", "redis://u:***@c"),
        ("redis://u:p@ss@h", "redis://u:***@h"),
        ("redis://:abc?def@host", "redis://:***@host"),
        ("redis://:ab#cd/ef@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://u:a/b@c:d@host/0", "redis://u:***@host/0"),
        ("redis:/u:secret@host", "redis:***@host"),
        ("sqlite:///tmp/a@b/jobs.db", "sqlite:///tmp/a@b/jobs.db"),
        ("not a url", "not a url"),
    ],
)
def test_mask_password(url: str, shown: str) -> None:
    assert mask_password(url) == shown


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(BrokerURLError, match=r"unknown scheme 'ftp'; known schemes are memory"):
        open_broker("ftp://host/x")
    with pytest.raises(BrokerURLError, match=r"unknown scheme ''"):
        open_broker("jobs.db")


async def test_open_broker_picks_the_module_by_scheme() -> None:
    async with open_broker("MEMORY://by-scheme?lease=4") as broker:
        assert isinstance(broker, MemoryBroker)
        assert broker.url.lease == 4.0


def test_memory_url_workers_option() -> None:
    assert parse_memory_url("memory://").options == {"workers": 0}
    url = parse_memory_url("memory://svc?workers=4&lease=1")
    assert (url.host, url.options["workers"], url.lease) == ("svc", 4, 1.0)
    with pytest.raises(BrokerURLError, match=r"workers='-1' must be 0 or more"):
        parse_memory_url("memory://?workers=-1")
    with pytest.raises(BrokerURLError, match=r"workers='two' is not a whole number"):
        parse_memory_url("memory://?workers=two")


@pytest.mark.parametrize(
    "url", ["memory://x:1", "memory://u:secret@x", "memory://x/path", "redis://x"]
)
def test_memory_url_shape(url: str) -> None:
    with pytest.raises(BrokerURLError) as info:
        parse_memory_url(url)
    assert "secret" not in str(info.value)


def test_lease_float_is_finite() -> None:
    assert math.isfinite(parse_broker_url("memory://?lease=1e-3").lease)


@pytest.mark.parametrize(
    "url", ["redis://:abc?def@host", "redis://u:abc#def@host/0", "redis://:abc/def@host:6379/0"]
)
def test_an_unencoded_password_is_refused_without_being_quoted(url: str) -> None:
    with pytest.raises(BrokerURLError, match="percent-encode the password") as info:
        parse_broker_url(url)
    assert "abc" not in str(info.value) and "def" not in str(info.value)
    assert "@host" in str(info.value), "the URL is still quoted, masked"


def test_the_percent_encoded_form_of_such_a_password_parses() -> None:
    url = parse_broker_url(f"redis://u:{quote('a?b#c/d@e: f%', safe='')}@host:6379/0")
    assert (url.username, url.password, url.host, url.port) == ("u", "a?b#c/d@e: f%", "host", 6379)
    assert "a?b" not in str(url) and "a?b" not in repr(url)


def test_an_at_in_a_path_without_a_password_is_fine() -> None:
    assert parse_broker_url("sqlite:///tmp/a@b/jobs.db").path == "/tmp/a@b/jobs.db"


# A password whose every stretch between special characters carries a marker (Kq0, Kq1, ...)
# that no fixed text contains: a leak of any stretch of it shows.
# (é and the full-width @ and / are there for urlsplit's NFKC check, which quotes the host part)
_SPECIALS = "?#/@:% &=+;[]\u00e9\uff20\uff0f"


@st.composite
def _passwords(draw: st.DrawFn) -> str:
    stretches = draw(st.integers(min_value=1, max_value=4))
    return "".join(
        draw(st.text(_SPECIALS, max_size=3)) + f"Kq{i}" + draw(st.text("abc/?#@: %", max_size=3))
        for i in range(stretches)
    )


_USERS = st.sampled_from(["", "alice"])
_HEADS = st.sampled_from(["redis://", "rediss://", "sqlite://", "memory://", "ftp://", "redis:/"])
_TAILS = st.sampled_from(
    ["host", "host:6380/1", "host:bad/0", "[::1]:6379/0", "h/0?lease=5", "h/0?nope=1",
     "h/0?lease=zz", "h/0#frag", "h/0?x=a@b", "", "/path/jobs.db"]
)  # fmt: skip


def _assert_hidden(password: str, text: str) -> None:
    assert password not in text
    for i in range(password.count("Kq")):
        assert f"Kq{i}" not in text, f"a piece of the password leaked into {text!r}"


@given(_HEADS, _USERS, _passwords(), _TAILS)
def test_no_part_of_a_password_is_ever_shown(
    head: str, user: str, password: str, tail: str
) -> None:
    url = f"{head}{user}:{password}@{tail}"
    _assert_hidden(password, mask_password(url))
    try:
        parsed = parse_broker_url(url)
    except BrokerURLError as exc:
        _assert_hidden(password, str(exc))
    else:
        _assert_hidden(password, str(parsed))
        _assert_hidden(password, repr(parsed))
    if head == "ftp://":
        with pytest.raises(BrokerURLError) as info:
            open_broker(url)
        _assert_hidden(password, str(info.value))


def test_sqlite_url_errors_mask_the_password() -> None:
    from wireframe.jobs.brokers.sqlite import parse_sqlite_url

    with pytest.raises(BrokerURLError) as info:
        parse_sqlite_url("sqlite://user:sEcRwOrD@host/x.db")
    assert "sEcRwOrD" not in str(info.value) and ":***@" in str(info.value)
