"""Claims: a lease and a token on Check rows, so that no check runs twice
for one slot. The queries live on ``CheckQuerySet`` (``kong.models``);
these are the names commands, the scheduler and tasks call."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from kong.models import Check, CheckQuerySet


def new_token() -> str:
    """A claim token: one per run, or per scheduler tick."""
    return uuid.uuid4().hex


def claim_due(
    checks: CheckQuerySet,
    *,
    now: datetime | None = None,
    limit: int | None = None,
    token: str | None = None,
) -> CheckQuerySet:
    """Claim the due checks among ``checks`` with ``token`` (a new one if
    None); see ``CheckQuerySet.claim_due``."""
    return checks.claim_due(token or new_token(), now=now, limit=limit)


def claim_checks(pks: Iterable[int], *, token: str, now: datetime | None = None) -> list[int]:
    """Claim these checks whether due or not (run-now); see ``CheckQuerySet.claim``."""
    return Check.objects.filter(pk__in=list(pks)).claim(token, now=now)


def renew_claims(tokens: str | Iterable[str], now: datetime | None = None) -> int:
    """Extend the lease of every check still claimed with ``tokens``; returns how many."""
    return Check.objects.renew([tokens] if isinstance(tokens, str) else list(tokens), now=now)


def release_claims(token: str, pks: Iterable[int] | None = None) -> int:
    """Give up claims made with ``token`` (only ``pks``, if given) without
    recording anything: the checks stay due and the next run takes them."""
    claimed = Check.objects.all() if pks is None else Check.objects.filter(pk__in=list(pks))
    return claimed.release(token)
