"""The unit of work behind the ``UnitOfWork`` port: ``SqlUnitOfWork``, composed of its core (base.py) and one query
group per aggregate (users.py, sessions.py, accounts.py, verifications.py) plus the batched removal of old rows
(retention.py)."""

from __future__ import annotations

from authsidecar.storage.unit_of_work.accounts import AccountQueries
from authsidecar.storage.unit_of_work.retention import RetentionQueries
from authsidecar.storage.unit_of_work.sessions import SessionQueries
from authsidecar.storage.unit_of_work.users import UserQueries
from authsidecar.storage.unit_of_work.verifications import VerificationQueries

__all__ = ["SqlUnitOfWork"]


class SqlUnitOfWork(UserQueries, SessionQueries, AccountQueries, VerificationQueries, RetentionQueries):
    """UnitOfWork over one SQLAlchemy connection inside an open transaction. Never commits by itself.

    Every write that makes a cached snapshot stale records it here (deleted sessions, changed users); the
    transaction logs those invalidations in the same commit and hands them to the commit listener after it.
    Such writes need a real transaction: in autocommit mode they raise before touching anything.
    """
