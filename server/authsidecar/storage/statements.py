"""The statements the unit of work and the invalidation log's reads run, built once per schema with bind parameters
(SQLAlchemy Core)."""

from __future__ import annotations

import sqlalchemy as sa

from authsidecar.domain.models import CREDENTIAL_PROVIDER
from authsidecar.storage.schema import Schema

__all__ = ["Statements"]


class Statements:
    """Every statement the repositories run, built once per schema with bind parameters.

    Building a SQLAlchemy statement per call costs more CPU than the round trip it makes; a prebuilt one is
    compiled once and its cache key is memoised.
    """

    def __init__(self, schema: Schema) -> None:
        self.registry = schema.registry
        u, a, s = schema.user, schema.account, schema.session
        self._session, self._account = s, a
        p = sa.bindparam
        self.insert_user = sa.insert(u)
        self.insert_account = sa.insert(a)
        self.insert_session = sa.insert(s)
        self._session_if_credential: dict[tuple[tuple[str, ...], bool], sa.Insert] = {}
        self.account_keys = [c.key for c in a.c]
        self.user_with_credential = (
            # "account.<key>": no user field can be named so (field names are identifiers), so none is shadowed
            sa.select(*u.c, *(c.label(f"account.{c.key}") for c in a.c))
            .select_from(u.outerjoin(a, sa.and_(a.c.user_id == u.c.id, a.c.provider_id == CREDENTIAL_PROVIDER)))
            .where(u.c.email == p("email"))
            .limit(1)
        )
        self.credential_account = (
            sa.select(a).where(a.c.user_id == p("user_id"), a.c.provider_id == CREDENTIAL_PROVIDER).limit(1)
        )
        self.lock_credential = (
            sa.update(a).where(a.c.id == p("a_id"), a.c.password == p("a_password")).values(password=a.c.password)
        )
        self.update_password = (
            sa.update(a).where(a.c.id == p("a_id")).values(password=p("a_password"), updated_at=p("a_now"))
        )
        # A session that ended meanwhile (expired, or ended by another writer setting expiresAt) is not revived.
        self.refresh_session = (
            sa.update(s)
            .where(s.c.token == p("s_token"), s.c.expires_at > p("s_now"))
            .values(expires_at=p("s_expires"), updated_at=p("s_now"))
        )
        returning = list(s.c)
        self.delete_by_token = sa.delete(s).where(s.c.token == p("s_token")).returning(*returning)
        self.delete_by_id = sa.delete(s).where(s.c.id == p("s_id"), s.c.user_id == p("s_user")).returning(*returning)
        self.delete_for_user = sa.delete(s).where(s.c.user_id == p("s_user")).returning(*returning)
        self.delete_for_user_but = (
            sa.delete(s).where(s.c.user_id == p("s_user"), s.c.id != p("s_keep")).returning(*returning)
        )
        self.user_by_id = sa.select(u).where(u.c.id == p("u_id"))
        self.user_by_email = sa.select(u).where(u.c.email == p("u_email"))
        self.mark_verified = (
            sa.update(u)
            .where(u.c.id == p("u_id"), u.c.email == p("u_email"))
            .values(email_verified=True, updated_at=p("u_now"))
            .returning(*u.c)
        )
        self.change_email = (
            sa.update(u)
            .where(u.c.id == p("u_id"), u.c.email == p("u_email"))
            .values(email=p("u_new_email"), email_verified=p("u_verified"), updated_at=p("u_now"))
            .returning(*u.c)
        )
        self.delete_user = sa.delete(u).where(u.c.id == p("u_id")).returning(u.c.id)
        v = schema.verification
        self.insert_verification = sa.insert(v)
        self.consume_verification = (
            sa.delete(v).where(v.c.identifier == p("v_identifier"), v.c.expires_at > p("v_now")).returning(v.c.value)
        )
        self.verification_exists = sa.select(v.c.id).where(v.c.identifier == p("v_identifier")).limit(1)
        self.verification_table = v
        self.user_table = u
        log, seq = schema.invalidation, schema.invalidation_seq
        self.next_seq = (
            sa.update(seq).where(seq.c.id == 1).values(last_seq=seq.c.last_seq + 1).returning(seq.c.last_seq)
        )
        self.insert_invalidation = sa.insert(log)
        self.last_seq = sa.select(seq.c.last_seq).where(seq.c.id == 1)
        self.notify = sa.select(sa.func.pg_notify(p("channel"), p("seq")))
        self.invalidations_after = (
            sa.select(log.c.seq, log.c.payload).where(log.c.seq > p("l_after")).order_by(log.c.seq).limit(p("l_limit"))
        )
        self.invalidations_since = (
            sa.select(log.c.seq, log.c.payload)
            .where(log.c.created_at > p("l_since"), log.c.seq <= p("l_upto"))
            .order_by(log.c.seq)
        )
        ob, ob_seq = schema.outbox, schema.outbox_seq
        self.next_outbox_seq = (
            sa.update(ob_seq)
            .where(ob_seq.c.id == 1)
            .values(last_seq=ob_seq.c.last_seq + p("o_count"))
            .returning(ob_seq.c.last_seq)
        )
        self.insert_outbox = sa.insert(ob)
        self.session_by_token = sa.select(s).where(s.c.token == p("s_token"))
        # Batched removals of old rows, by the column that says how old they are.
        self.aged = {"session": s.c.expires_at, "verification": v.c.expires_at, "invalidation": log.c.created_at}
        self.list_sessions = (
            sa.select(s)
            .where(s.c.user_id == p("s_user"), s.c.expires_at > p("s_now"))
            .order_by(s.c.created_at.desc(), s.c.id)
        )

    def session_if_credential(self, keys: tuple[str, ...], returning_id: bool) -> sa.Insert:
        """INSERT INTO session (keys) SELECT :v0, :v1, ... FROM account WHERE id = :a_id AND password = :a_password
        FOR UPDATE: the session row exists only if the credential still has that hash, and the account row stays
        locked until commit (SQLite has no FOR UPDATE: its writes are serialised whole). Built once per column set."""
        stmt = self._session_if_credential.get((keys, returning_id))
        if stmt is None:
            s, a = self._session, self._account
            p = sa.bindparam
            select = (
                sa.select(*(p(f"v{i}", type_=s.c[key].type) for i, key in enumerate(keys)))
                .where(a.c.id == p("a_id"), a.c.password == p("a_password"))
                .with_for_update()
            )
            stmt = sa.insert(s).from_select(list(keys), select)
            if returning_id:
                stmt = stmt.returning(s.c.id)
            self._session_if_credential[(keys, returning_id)] = stmt
        return stmt
