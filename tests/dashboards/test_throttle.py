"""Login throttling: lock-out with back-off per account and per address, on a fake clock."""

from hypothesis import given
from hypothesis import strategies as st

from dashboards.throttle import LoginThrottle, Policy


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def throttle(clock, **kw):
    return LoginThrottle(
        Policy(limit=3, base=10, cap=80, window=300), Policy(limit=6, base=10, cap=80, window=300), clock=clock, **kw
    )


def test_an_account_is_locked_after_the_limit_and_the_lock_doubles_up_to_the_cap(caplog):
    clock = Clock()
    t = throttle(clock)
    assert [t.failure("Ana", "10.0.0.1") for _ in range(2)] == [0, 0] and t.locked("ana", "10.0.0.2") == 0
    assert t.failure("ana", "10.0.0.1") == 10  # the third in a row: locked, whatever the case of the name
    assert t.locked("ANA", "10.0.0.9") == 10  # from any address
    assert "login lock-out: account 'ana' locked for 10 s after 3 failed logins" in caplog.text
    clock.now += 10
    assert t.locked("ana", "10.0.0.9") == 0
    assert [t.failure("ana", "10.0.0.1") for _ in range(4)] == [20, 40, 80, 80]  # back-off, capped


def test_a_success_clears_the_account_but_not_the_address():
    clock = Clock()
    t = throttle(clock)
    for name in ("a", "b", "a", "b", "c"):
        t.failure(name, "10.0.0.1")
    t.success("a")
    assert t.locked("a", "10.0.0.2") == 0
    assert t.failure("a", "10.0.0.1") == 10  # the address's sixth failure in a row locks the address
    assert t.locked("someone-else", "10.0.0.1") == 10 and t.locked("someone-else", "10.0.0.2") == 0


def test_failures_further_apart_than_the_window_start_the_count_again():
    clock = Clock()
    t = throttle(clock)
    for _ in range(10):
        assert t.failure("ana", "10.0.0.1") == 0
        clock.now += 301


def test_the_number_of_keys_kept_is_bounded():
    t = throttle(Clock(), max_keys=100)
    for i in range(1000):
        t.failure(f"user{i}", f"10.0.{i // 256}.{i % 256}")
    assert len(t.state()) == 100


@given(st.integers(min_value=0, max_value=10_000))
def test_the_lock_never_shrinks_with_more_failures_and_never_passes_the_cap(failures):
    p = Policy(limit=5, base=30, cap=900)
    assert 0 <= p.lock_for(failures) <= p.lock_for(failures + 1) <= 900
    assert (p.lock_for(failures) > 0) == (failures >= 5)
