"""API keys: hashed at rest, scoped, revocable; the first start makes one."""

from __future__ import annotations

from swell.control import ApiKeys
from swell.control._keys import KeyRecord, KeyType


def test_a_key_is_found_by_its_header_and_only_by_it() -> None:
    keys = ApiKeys()
    record, secret = KeyRecord.create(type=KeyType.WORKSPACE, name=None, model_ids=None, now=1.0)
    keys.add(record)
    assert secret.startswith("sw_") and record.sha256 != secret
    assert keys.authenticate(f"Api-Key {secret}".encode()) is record
    assert keys.authenticate(f"Bearer {secret}".encode()) is record
    assert keys.authenticate(b"Api-Key wrong") is None
    assert keys.authenticate(None) is None and keys.authenticate(secret.encode()) is None


def test_revoking_drops_the_cached_header_at_once() -> None:
    keys = ApiKeys()
    record, secret = KeyRecord.create(type=KeyType.WORKSPACE, name=None, model_ids=None, now=1.0)
    keys.add(record)
    header = f"Api-Key {secret}".encode()
    assert keys.authenticate(header) is record  # now cached
    keys.revoke(record.id, 2.0)
    assert keys.authenticate(header) is None and keys.live() == []


def test_invoke_keys_reach_only_their_models() -> None:
    some, _ = KeyRecord.create(type=KeyType.INVOKE, name=None, model_ids=["m1"], now=1.0)
    every, _ = KeyRecord.create(type=KeyType.INVOKE, name=None, model_ids=None, now=1.0)
    workspace, _ = KeyRecord.create(type=KeyType.WORKSPACE, name=None, model_ids=None, now=1.0)
    assert some.can_invoke("m1") and not some.can_invoke("m2") and not some.can_manage()
    assert every.can_invoke("m2") and not every.can_manage()
    assert workspace.can_invoke("m2") and workspace.can_manage()


def test_use_is_recorded_for_the_store() -> None:
    keys = ApiKeys()
    record, secret = KeyRecord.create(type=KeyType.WORKSPACE, name=None, model_ids=None, now=1.0)
    keys.add(record)
    keys.authenticate(f"Api-Key {secret}".encode())
    used = keys.take_used()
    assert list(used) == [record.id] and record.last_used_at == used[record.id]
    assert keys.take_used() == {}




def test_bad_keys_are_counted_and_logged_at_most_once_per_period(caplog) -> None:  # type: ignore[no-untyped-def]
    keys = ApiKeys()
    record, secret = KeyRecord.create(type=KeyType.WORKSPACE, name=None, model_ids=None, now=0.0)
    keys.add(record)
    caplog.set_level("WARNING", logger="swell.auth")
    for i in range(1000):  # a guesser, at full speed
        assert keys.authenticate(f"Api-Key guess-{i}".encode()) is None
    assert keys.authenticate(f"Api-Key {secret}".encode()) is record
    assert keys.authenticate(None) is None  # no header at all is not a guess
    assert keys.failures == 1000
    lines = [r.getMessage() for r in caplog.records if r.name == "swell.auth"]
    assert len(lines) == 1 and "1 request(s) with an unknown or revoked API key" in lines[0]
    (family,) = keys.metric_families()
    assert family.lines[-1] in ("swell_auth_failures_total 1000", "swell_auth_failures_total 1000.0")
