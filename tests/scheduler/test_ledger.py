import math

import pytest

from ponder.scheduler.ledger import LedgerError, TokenLedger


class Ctx:
    limit = math.inf
    on_spend = None


def test_fair_share_grants_never_exceed_total():
    ledger = TokenLedger(1000, queries=4)
    accts = [ledger.open(f"q{i}") for i in range(4)]
    assert [a.granted for a in accts] == [250, 250, 250, 250]
    assert ledger.free == 0
    # A fifth query beyond the plan gets nothing rather than overspending.
    assert ledger.open("extra").granted == 0


def test_refund_raises_later_shares():
    ledger = TokenLedger(1000, queries=4)
    a = ledger.open("a")
    ctx = Ctx()
    a.attach(ctx)
    assert ctx.limit == 250
    ctx.on_spend(100)  # the search stopped early after 100
    assert ledger.close(a) == 150
    assert ledger.refunded == 150
    # 900 left for 3 queries instead of 750.
    assert ledger.open("b").granted == pytest.approx(300)


def test_weighted_regrant_is_bounded_by_free_and_spend():
    ledger = TokenLedger(1000, queries=2)
    a = ledger.open("a")  # 500
    ctx = Ctx()
    a.attach(ctx)
    assert a.regrant_weighted(0.5) == 250
    assert ctx.limit == 250  # the running search sees its new limit
    b = ledger.open("b")  # 750 free, one query left
    assert b.granted == 750
    assert b.regrant_weighted(2.0) == 750  # asks 1500, only 750 exists (and no query is left)
    a.spend(300)  # overspent its 250 by one batch
    assert a.regrant_weighted(0.1) == 300  # never below what is spent
    ledger.close(a)
    ledger.close(b)
    assert ledger.spent == 300


def test_overspend_is_taken_from_the_pool():
    ledger = TokenLedger(100, queries=2)
    a = ledger.open("a")
    a.spend(70)  # grant 50, one batch over
    ledger.close(a)
    assert ledger.open("b").granted == 30


def test_bad_input():
    with pytest.raises(LedgerError, match="positive"):
        TokenLedger(0)
    ledger = TokenLedger(10)
    a = ledger.open("a")
    with pytest.raises(LedgerError, match="already"):
        ledger.open("a")
    ledger.close(a)
    with pytest.raises(LedgerError, match="closed"):
        ledger.regrant(a, 5)


def test_raised_grants_leave_a_reserve_for_queries_to_come():
    ledger = TokenLedger(1000, queries=4, reserve=0.5)
    a = ledger.open("a")  # 250; 750 free for 3 more
    assert a.regrant_weighted(4.0) == 250 + 375  # may take only half of what is free
    assert ledger.free == 375


def test_expected_spend_is_held_and_the_limit_above_it_stays_within_the_total():
    """regrant(limit, expected): fair shares see the expected spend; the limit's excess comes
    only from room no other open limit claims, so spend cannot pass the total."""
    ledger = TokenLedger(1000, queries=4, reserve=0.0)
    a = ledger.open("a")  # 250
    ctx = Ctx()
    a.attach(ctx)
    assert ledger.regrant(a, 600, expected=100) == 600 and ctx.limit == 600
    assert ledger.committed == 100 and ledger.report()["excess"] == 500
    assert ledger.open("b").granted == pytest.approx(300)  # (1000 - 100) / 3: the excess is not held
    c = ledger.open("c")  # 300: committed 700, excess 500
    assert ledger.regrant(c, 900, expected=300) == 300  # no room is left for c's excess
    a.spend(400)  # a spends past its expected 100: committed grows, excess shrinks
    assert ledger.committed == 1000 and ledger.report()["excess"] == 200
    assert ledger.close(a) == 0 and ledger.report()["excess"] == 0
    assert ledger.committed == 1000 - 0  # 400 spent + b's 300 + c's 300
    d = ledger.open("d")
    assert d.granted == 0
