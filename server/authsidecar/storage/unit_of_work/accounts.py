"""The unit of work's account queries: insert, the credential account, its row lock and password changes."""

from __future__ import annotations

from datetime import datetime

from authsidecar.domain.models import Account
from authsidecar.storage.rows import record, values
from authsidecar.storage.unit_of_work.base import UnitOfWorkBase

__all__ = ["AccountQueries"]


class AccountQueries(UnitOfWorkBase):
    """Accounts."""

    async def insert_account(self, account: Account) -> str:
        """Insert an account row; returns its id."""
        return await self._insert(self._q.insert_account, values(self._q.registry.account, account))

    async def get_credential_account(self, user_id: str) -> Account | None:
        """The user's email/password account."""
        row = (await self._execute(self._q.credential_account, {"user_id": user_id})).first()
        return record(Account, self._q.registry.account, row._mapping) if row else None

    async def lock_credential(self, account_id: str, password_hash: str) -> bool:
        """A no-op UPDATE of the account, conditional on its hash: it takes the row lock (Postgres, MySQL) or the
        write lock (SQLite, where a SELECT would not even begin the transaction) until commit."""
        params = {"a_id": account_id, "a_password": password_hash}
        return (await self._conn.execute(self._q.lock_credential, params)).rowcount > 0

    async def update_account_password(self, account: Account, password_hash: str, now: datetime) -> None:
        """Replace an account's password hash."""
        await self._execute(self._q.update_password, {"a_id": account.id, "a_password": password_hash, "a_now": now})
