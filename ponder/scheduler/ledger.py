"""The global token ledger of an eval job: one total budget, a grant per query, spend as it
happens, refunds when a search finishes under its grant.

Cost is the unit of `Compute.cost`: policy tokens + PRM tokens x `prm_cost_ratio`. A query's
grant is reserved from the free pool when the query opens, so grants never add up to more than
the total. The context refuses an expansion its grant cannot pay for (by the search's own cost
per sample so far), so a search overspends its grant only on its first expansion or by an
estimate's error; any overspend is taken from the pool, so later grants shrink.

Redistribution: each query's fair share is what is free divided by the queries not yet opened,
so what an easy query does not use (a small bin weight, an early stop) raises the share of every
query after it, and a hard query's larger weight draws on it.

Expected spend and limit: a regrant may hold a query's expected spend in the pool (what fair
shares see) and let its limit go higher, for a search whose spend varies from query to query
(adaptive best-of-N stops at 4 samples or at 64). The limit's excess over the expected spend is
room no other grant can use while the query runs, so committed spend plus every open excess
stays within the total: the job's spend cannot pass its budget by more than a first expansion.

`TokenLedger` decides from what is free at the moment a query asks, which depends on which
queries have finished; `OrderedLedger` (what the runner uses when a job's size is known) takes
the same decisions in the queries' order from a view the order fixes, so grants do not depend on
timing.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any


class LedgerError(ValueError):
    pass


@dataclass(eq=False)
class Account:
    """One query's grant and spend. `attach(ctx)` wires a search context to it."""

    qid: str
    ledger: TokenLedger
    granted: float  # the limit the search runs under
    base: float  # the fair share when the query opened; bin weights scale it
    expected: float = -1.0  # what the pool holds for it while open (below 0: the grant)
    spent: float = 0.0
    closed: bool = False
    ctx: Any = None
    history: list[tuple[str, float]] = field(default_factory=list)
    index: int = -1  # its place in the order queries opened (`OrderedLedger`)
    decided: bool = False  # its ordered decision is taken (`OrderedLedger`)

    def attach(self, ctx: Any) -> None:
        """Make `ctx` (an `EngineContext`) spend against this account: its limit is the grant and
        every charge is reported here."""
        self.ctx = ctx
        ctx.limit = self.granted
        ctx.on_spend = self.spend
        ctx.account = self  # `ctx.regrant` (the door) moves the grant through this account

    def spend(self, cost: float) -> None:
        before, extra = self.committed, self.excess
        self.spent += cost
        self.ledger.spent += cost
        self.ledger._book(self, before, extra)

    async def request(self, weight: float, cap: float | None = None) -> float:
        """What the door's `regrant` calls: `regrant_weighted`, or for an `OrderedLedger` the
        same decision taken in the queries' order (it may wait for earlier queries)."""
        return await self.ledger.request(self, weight, cap)

    def regrant_weighted(self, weight: float, cap: float | None = None) -> float:
        """Set the expected spend to `weight` x the fair share at opening and the limit to
        `cap` x it (default: the same), within what is free; returns the limit."""
        if cap is None:
            return self.ledger.regrant(self, self.base * weight)
        return self.ledger.regrant(self, self.base * cap, self.base * weight)

    @property
    def left(self) -> float:
        return self.granted - self.spent

    @property
    def held(self) -> float:
        """What its grant holds in the pool: the expected spend, or the grant when none was set."""
        return self.granted if self.expected < 0 else self.expected

    @property
    def committed(self) -> float:
        # An open account holds its expected spend (or its spend, if it spent more).
        return self.spent if self.closed else max(self.held, self.spent)

    @property
    def excess(self) -> float:
        """The limit's room above what the pool holds for it (0 when closed)."""
        return 0.0 if self.closed else max(0.0, self.granted - self.committed)


class TokenLedger:
    def __init__(self, total: float, queries: int | None = None, reserve: float = 0.5):
        if not total > 0:
            raise LedgerError(f"the job budget must be positive, got {total!r}")
        self.total = float(total)
        self.unopened = queries  # queries still to come (None: unknown, fair share = all free)
        # A raised grant may take at most (1 - reserve) of what is free while queries are still
        # to come, so one early hard query cannot starve the rest of the job.
        self.reserve = reserve
        self.spent = 0.0
        self.refunded = 0.0
        self.accounts: dict[str, Account] = {}
        # Running totals, kept by every operation, so each one is O(1) at 10^5 queries.
        self._committed = 0.0
        self._excess = 0.0  # open accounts' limits above their expected spend
        self._open = 0

    @property
    def committed(self) -> float:
        return self._committed

    @property
    def free(self) -> float:
        return max(0.0, self.total - self.committed)

    def fair_share(self) -> float:
        if math.isinf(self.total):
            return math.inf
        return self.free / max(1, self.unopened or 1)

    def open(self, qid: str, weight: float = 1.0) -> Account:
        base = self.fair_share()
        acct = self._register(Account(qid, self, min(self.free, base * weight), base))
        acct.history.append(("open", acct.granted))
        return acct

    def _register(self, acct: Account) -> Account:
        if acct.qid in self.accounts:
            raise LedgerError(f"query {acct.qid!r} already has an account")
        if self.unopened is not None:
            self.unopened = max(0, self.unopened - 1)
        self.accounts[acct.qid] = acct
        self._committed += acct.committed
        self._open += 1
        return acct

    async def admit(self, qid: str, provisional: bool = False) -> Account:
        """`open`, as the runner calls it (an `OrderedLedger` may make it wait its turn)."""
        return self.open(qid)

    async def request(self, acct: Account, weight: float, cap: float | None = None) -> float:
        return acct.regrant_weighted(weight, cap)

    def regrant(self, acct: Account, amount: float, expected: float | None = None) -> float:
        """Change an open account's limit to `amount` and what the pool holds for it to
        `expected` (default: the limit), taking more only from what is free (the limit's excess
        only from what no other open limit claims) and never going below what it has spent. The
        attached context sees the new limit at once; returns it."""
        if acct.closed:
            raise LedgerError(f"query {acct.qid!r} is closed")
        keep = (1 - self.reserve) if self.unopened else 1.0
        before, extra = acct.committed, acct.excess
        others = self.committed - before
        acct.expected, acct.granted = decision(
            acct.spent, amount if expected is None else min(expected, amount), None if expected is None else amount,
            avail=before + self.free * keep, unclaimed=self.total - others - (self._excess - extra), keep=keep)
        self._book(acct, before, extra)
        acct.history.append(("regrant", acct.granted))
        return acct.granted

    def _book(self, acct: Account, before: float, extra: float) -> None:
        """Keep the running totals after `acct` moved from (committed, excess) = (before, extra);
        the attached context sees the account's limit."""
        self._committed += acct.committed - before
        self._excess += acct.excess - extra
        if acct.ctx is not None:
            acct.ctx.limit = acct.granted

    def close(self, acct: Account) -> float:
        """The search finished: what it did not spend goes back to the pool (returned)."""
        if acct.closed:
            return 0.0
        refund = acct.committed - acct.spent  # what the pool held for it and gets back
        before, extra = acct.committed, acct.excess
        acct.closed = True
        self._book(acct, before, extra)
        self._open -= 1
        if refund > 0:
            self.refunded += refund
        acct.history.append(("close", refund))
        return refund

    def report(self) -> dict[str, float]:
        return {
            "total": self.total,
            "spent": self.spent,
            "committed": self.committed,
            "free": self.free,
            "excess": self._excess,
            "refunded": self.refunded,
            "queries": len(self.accounts),
            "open": self._open,
        }


class OrderedLedger(TokenLedger):
    """A job ledger whose grants do not depend on timing.

    A shared ledger's fair share is what is free when a query asks, and with queries in flight
    that depends on which earlier ones have finished, so two runs of the same job could grant
    differently. Here a query's decision (its grant when it opens, or for `auto` its regrant
    once the probe has run) is taken in the order the queries opened, from a view that holds
    only what the order fixes:

        view_i = total - spend of queries 0 .. i-W (closed; the decision waits for them)
                       - what the decisions of queries i-W+1 .. i-1 hold (their expected
                         spend; the decision waits for them to be taken)
        fair share_i = view_i / (queries - i)

    and, as in `TokenLedger.regrant`, a limit's excess over its expected spend comes only from
    room the window's excesses do not claim.

    W (`window`, `scheduler.ledger_window`; by default 4x the searches in flight): a query waits
    only for the one W places before it, which has usually finished. A provisional
    account (`auto`'s, before its probe is scored) runs under the job's mean share per query
    and takes its real grant at its regrant. The window's holds stand for their spend until
    they leave it, so a job cannot overspend by more than the probes in flight; the same job
    gets the same grants in any order of completion and at any latency."""

    def __init__(self, total: float, queries: int, reserve: float = 0.5, window: int = 32):
        super().__init__(total, queries, reserve)
        if window < 1:
            raise LedgerError(f"the ledger's window must be at least 1, got {window!r}")
        self.queries = queries
        self.window = window
        self.order: list[Account] = []
        self._next = 0  # every query below this index has its decision
        self._below = 0  # queries folded into _settled (closed, outside every later window)
        self._settled = 0.0
        # Running sums over the decided queries _below .. _next-1 (the next decision's window):
        # what their decisions hold, and their limits above that. O(1) a decision at 10^5 queries.
        self._held = 0.0
        self._over = 0.0
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _gate(self, i: int) -> None:
        """Until every query before `i` has its decision and those W or more places before it
        have closed."""
        while not (self._next >= i and all(a.closed for a in self.order[self._below:max(0, i - self.window + 1)])):
            await self._changed.wait()

    def _view(self, i: int) -> tuple[float, float, float]:
        """(what is free for query i's decision, its fair share, the window's limits above what
        they hold), from the order alone: the window's queries count at what their decision
        holds for them, never at what they have spent so far."""
        while self._below <= i - self.window:
            a = self.order[self._below]
            self._held -= a.held
            self._over -= a.granted - a.held
            self._settled += a.spent
            self._below += 1
        free = max(0.0, self.total - self._settled - self._held)
        return free, free / max(1, self.queries - i), max(0.0, self._over)

    def _decide(self, acct: Account) -> None:
        acct.decided = True
        while self._next < len(self.order) and self.order[self._next].decided:
            a = self.order[self._next]
            self._held += a.held
            self._over += a.granted - a.held
            self._next += 1
        self._notify()

    async def admit(self, qid: str, provisional: bool = False) -> Account:
        i = len(self.order)
        mean = self.total / self.queries
        acct = self._register(Account(qid, self, mean, mean, index=i))
        self.order.append(acct)
        if not provisional:
            try:
                await self._gate(i)
            except BaseException:  # cancelled while it waited: later queries must not wait for it
                self.close(acct)
                raise
            free, share, _ = self._view(i)
            self._set(acct, min(free, share), share)
            self._decide(acct)
        acct.history.append(("open", acct.granted))
        return acct

    def _set(self, acct: Account, granted: float, base: float, expected: float = -1.0) -> None:
        before, extra = acct.committed, acct.excess
        acct.granted, acct.base, acct.expected = granted, base, expected
        self._book(acct, before, extra)

    async def request(self, acct: Account, weight: float, cap: float | None = None) -> float:
        i = acct.index
        if acct.closed or acct.decided:
            raise LedgerError(f"query {acct.qid!r} already has its grant")
        await self._gate(i)
        free, share, excess = self._view(i)
        # `TokenLedger.regrant`'s rule over the ordered view instead of what is free right now.
        keep = (1 - self.reserve) if i < self.queries - 1 else 1.0
        expected, limit = decision(acct.spent, share * (weight if cap is None else min(weight, cap)),
                                   None if cap is None else share * cap,
                                   avail=free * keep, unclaimed=free - excess, keep=keep)
        self._set(acct, limit, share, expected)
        acct.history.append(("regrant", limit))
        self._decide(acct)
        return limit

    def close(self, acct: Account) -> float:
        refund = super().close(acct)
        if not acct.decided:  # closed before its regrant: it stands at what it had
            self._decide(acct)
        else:
            self._notify()
        return refund


def decision(spent: float, want: float, limit: float | None, *, avail: float, unclaimed: float,
             keep: float) -> tuple[float, float]:
    """A regrant's (expected spend, limit), both ledgers' rule: the expected spend is `want`
    within `avail` and never below what is spent; the limit is `limit` (None: the expected
    spend), its excess over the expected spend only from `unclaimed` (the room no other open
    limit claims) less the expected spend, times `keep` (the reserve for queries to come)."""
    expected = max(spent, min(want, avail))
    if limit is None:
        return expected, expected
    return expected, max(expected, min(limit, expected + max(0.0, unclaimed - expected) * keep))
