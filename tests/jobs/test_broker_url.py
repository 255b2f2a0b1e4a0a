"""Broker URLs: parsing, option conversion, password masking and scheme lookup."""

from __future__ import annotations

import math

import pytest

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
        ("redis://u:p@h/0?x=a:b@c", "redis://u:***@h/0?x=a:b@c"),
        ("redis://u:p@ss@h", "redis://u:***@h"),
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
