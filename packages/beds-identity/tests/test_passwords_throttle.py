"""argon2id hashes and the failed-login counts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beds.config.model import PasswordSettings
from beds.errors import TooManyAttempts
from beds_identity.passwords import Passwords
from beds_identity.throttle import Throttle

FAST = PasswordSettings(time_cost=1, memory_kib=8, parallelism=1, min_length=8)


async def test_hash_verify_and_rehash_when_parameters_change() -> None:
    passwords = Passwords(FAST)
    hashed = await passwords.hash("s3cret pass")
    assert hashed.startswith("$argon2id$")
    assert await passwords.verify(hashed, "s3cret pass")
    assert not await passwords.verify(hashed, "other pass")
    assert not await passwords.verify(None, "s3cret pass")  # unknown user: always refused
    assert not await passwords.verify("not a hash", "s3cret pass")
    assert not passwords.needs_rehash(hashed)
    stronger = Passwords(PasswordSettings(time_cost=2, memory_kib=16, parallelism=1))
    assert stronger.needs_rehash(hashed)


def test_the_throttle_counts_within_its_window() -> None:
    throttle = Throttle(attempts=2, window=10.0)
    throttle.check("handle:a", now=0)
    throttle.failed("handle:a", "origin:x", now=0)
    throttle.failed("handle:a", "origin:x", now=1)
    with pytest.raises(TooManyAttempts) as held:
        throttle.check("handle:a", now=2)
    assert held.value.retry_after == pytest.approx(8)
    with pytest.raises(TooManyAttempts):
        throttle.check("handle:b", "origin:x", now=2)  # the origin is held too
    throttle.check("handle:a", now=11.5)  # the window slid past both failures
    throttle.failed("handle:c", now=0)
    throttle.succeeded("handle:c")
    throttle.check("handle:c", now=0)
    assert throttle.refused == 2


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 100)), max_size=60))
def test_the_throttle_never_holds_a_key_with_fewer_recent_failures(
    events: list[tuple[str, float]],
) -> None:
    throttle = Throttle(attempts=3, window=10.0)
    events = sorted(events, key=lambda event: event[1])
    for key, at in events:
        throttle.failed(key, now=at)
    end = events[-1][1] if events else 0.0
    for key in "abc":
        recent = [at for k, at in events if k == key and at + 10.0 - end > 0]
        try:
            throttle.check(key, now=end)
        except TooManyAttempts:
            assert len(recent) >= 3
        else:
            assert len(recent) < 3
