"""Better Auth's secondary-storage layout in Redis (compatibility profile), shared with a Better Auth app.

Under the prefix ``P`` (``better-auth:`` by default in the profile), exactly as better-auth 1.7 writes them:

| key | value | TTL |
|---|---|---|
| ``P<token>`` | ``{"session": {...}, "user": {...}}``, ISO dates | the session's remaining lifetime (s) |
| ``Pactive-sessions-<userId>`` | JSON ``[{"token", "expiresAt": ms}]``, ascending expiry | the furthest expiry |
| ``Prevoked-sessions-before-<userId>`` | ms epoch: sessions created earlier are revoked | max(expiresIn, 1 day) |
| ``Pverification:<identifier>`` | ``{"identifier", "value", "expiresAt", "createdAt", "updatedAt"}`` | until expiry |

Here Redis is an authority, not a copy: Better Auth treats a session key as the session (with no session table
at all in its default Redis-only mode), and deletes the key to revoke. So documents are plain (a Better Auth app
must read them) and a document present is a live session unless ``revoked-sessions-before`` says otherwise;
whoever can write to Redis can mint sessions, as in Better Auth itself.

Every write that touches the list is one Lua script (Better Auth's own read-modify-write of the list can lose a
concurrent update; ours cannot). Documents are changed by compare-and-set on their whole content, touching only
the keys that change, so fields this configuration does not know (a plugin's) survive, and a document deleted
meanwhile (revoked) is never written back. Errors leave as BackendUnavailable: the caller decides whether SQL may
answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from authsidecar.cache.codec import StaleDocument, decode_session, encode_session, iso, user_document
from authsidecar.cache.memo import BoundedMemo
from authsidecar.cache.resp import HotGetter
from authsidecar.cache.topology import UNAVAILABLE_ERRORS
from authsidecar.domain.fields import Registry
from authsidecar.domain.models import Session, SessionWithUser, User, Verification
from authsidecar.errors import BackendUnavailable

__all__ = ["BetterAuthRedis"]

# Rewrites the user's list of session references: drops expired ones, the tokens in ARGV[2..] (and any of them
# about to be re-added), appends ARGV[1] (a reference as JSON, or ""), sorts by expiry; deletes it when empty.
_WRITE_LIST = """
local function write_list(list_key, now, add, drop)
  local kept = {}
  local raw = redis.call('GET', list_key)
  if raw then
    local ok, parsed = pcall(cjson.decode, raw)
    if ok and type(parsed) == 'table' then
      for _, item in ipairs(parsed) do
        local at = type(item) == 'table' and tonumber(item.expiresAt)
        if at and at > now and not drop[item.token] then table.insert(kept, {token = item.token, expiresAt = at}) end
      end
    end
  end
  if add then table.insert(kept, add) end
  if #kept == 0 then redis.call('DEL', list_key) return end
  table.sort(kept, function(a, b) return a.expiresAt < b.expiresAt end)
  local parts = {}
  for i, item in ipairs(kept) do
    parts[i] = '{"token":' .. cjson.encode(item.token) .. ',"expiresAt":' .. string.format('%d', item.expiresAt) .. '}'
  end
  local ttl = math.floor((kept[#kept].expiresAt - now) / 1000)
  if ttl > 0 then
    redis.call('SET', list_key, '[' .. table.concat(parts, ',') .. ']', 'EX', ttl)
  else
    redis.call('DEL', list_key)
  end
end
"""

# KEYS: document, list. ARGV: document, ttl, token, expiresAt (ms), now (ms), the document it replaces ("": none,
# write unconditionally). Returns 1 when written, 0 when the document to replace is gone, 2 when it changed.
_STORE = (
    _WRITE_LIST
    + """
if ARGV[6] ~= '' then
  local current = redis.call('GET', KEYS[1])
  if not current then return 0 end
  if current ~= ARGV[6] then return 2 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
write_list(KEYS[2], tonumber(ARGV[5]), {token = ARGV[3], expiresAt = tonumber(ARGV[4])}, {[ARGV[3]] = true})
return 1
"""
)

# KEYS: list, revoked-before (or the list again), documents... ARGV: now (ms), revoked at (ms, or 0), its ttl,
# tokens... (one per document key).
_DELETE = (
    _WRITE_LIST
    + """
local drop = {}
for i = 3, #KEYS do
  redis.call('DEL', KEYS[i])
  drop[ARGV[i + 1]] = true
end
local revoked_at = tonumber(ARGV[2])
if revoked_at > 0 then
  local previous = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  redis.call('SET', KEYS[2], tostring(math.max(previous, revoked_at)), 'EX', ARGV[3])
end
write_list(KEYS[1], tonumber(ARGV[1]), nil, drop)
return #KEYS - 2
"""
)

# KEYS: document. ARGV: the document it replaces, the new one. Keeps the TTL; 1 when written.
_SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"""
_ATTEMPTS = 3  # compare-and-set rounds before giving up on a document that keeps changing

_ERRORS = UNAVAILABLE_ERRORS


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


class BetterAuthRedis:
    """Sessions and verification values in Better Auth's Redis layout."""

    def __init__(
        self,
        client: Redis,
        prefix: str,
        registry: Registry,
        revoked_before_ttl: int,
        getter: HotGetter | None = None,
    ) -> None:
        self._redis = client
        self._getter = getter
        self._prefix = prefix
        self._registry = registry
        self._revoked_ttl = revoked_before_ttl
        self._decoded: BoundedMemo[bytes, SessionWithUser] = BoundedMemo(4096)
        self._users: BoundedMemo[str, str] = BoundedMemo(4096)  # token -> its session's user id
        self._store = client.register_script(_STORE)
        self._delete = client.register_script(_DELETE)
        self._swap = client.register_script(_SWAP)

    def _list_key(self, user_id: str) -> str:
        return f"{self._prefix}active-sessions-{user_id}"

    def _revoked_key(self, user_id: str) -> str:
        return f"{self._prefix}revoked-sessions-before-{user_id}"

    async def _get(self, key: str) -> bytes | None:
        try:
            raw = await (self._getter.get(key) if self._getter is not None else self._redis.get(key))
        except _ERRORS as exc:
            raise BackendUnavailable("Redis is unavailable") from exc
        return _as_bytes(raw)

    async def _get_two(self, first: str, second: str) -> tuple[bytes | None, bytes | None]:
        try:
            if self._getter is not None:
                a, b = await self._getter.get_many(first, second)
                return a, b
            values = await self._redis.mget([first, second])  # the client decodes no responses: bytes
        except _ERRORS as exc:
            raise BackendUnavailable("Redis is unavailable") from exc
        return _as_bytes(values[0]), _as_bytes(values[1])

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except _ERRORS as exc:
            raise BackendUnavailable("Redis is unavailable") from exc

    def _decode(self, raw: bytes) -> SessionWithUser | None:
        entry = self._decoded.get(raw)
        if entry is None:
            try:
                entry = decode_session(raw, self._registry, lenient=True)
            except (StaleDocument, ValueError, KeyError, TypeError):
                return None
            self._decoded.put(raw, entry)
        return entry

    # -- sessions --------------------------------------------------------------------------------------------

    async def get(self, token: str) -> SessionWithUser | None:
        """The live session of a token: its document, unless unreadable or created before the user's
        ``revoked-sessions-before`` mark. Two GETs, as Better Auth does; pipelined in one round trip once the
        token's user is known (a session never changes user)."""
        user_id = self._users.get(token)
        if user_id is not None:
            raw, revoked_before = await self._get_two(self._prefix + token, self._revoked_key(user_id))
        else:
            raw, revoked_before = await self._get(self._prefix + token), None
        if raw is None:
            return None
        entry = self._decode(raw)
        if entry is None:
            return None
        if entry.session.user_id != user_id:
            self._users.put(token, entry.session.user_id)
            revoked_before = await self._get(self._revoked_key(entry.session.user_id))
        if revoked_before is not None and _ms(entry.session.created_at) < _number(revoked_before):
            return None
        return entry

    async def store(self, entry: SessionWithUser, now: datetime) -> None:
        """Write a new session's document and its reference in the user's list (one script)."""
        await self._write(entry.session, encode_session(entry, self._registry, checked=False), now, "")

    async def refresh(self, session: Session, now: datetime) -> bool:
        """Set a session's new expiry in its document (every other key of it kept as it is, fields of plugins
        included) and in its reference. False only when the document is gone (revoked meanwhile): it is not
        brought back. A document that keeps changing under us is being refreshed by someone else: still alive."""
        for _ in range(_ATTEMPTS):
            raw = await self._get(self._prefix + session.stored_token)
            if raw is None:
                return False
            try:
                doc = json.loads(raw)
                doc["session"]["expiresAt"] = iso(session.expires_at)
                doc["session"]["updatedAt"] = iso(session.updated_at)
            except (ValueError, KeyError, TypeError):
                return False
            written = await self._write(session, _dumps(doc), now, raw)
            if written != 2:
                return written == 1
        return True

    async def _write(self, session: Session, document: str | bytes, now: datetime, replaces: str | bytes) -> int:
        ttl = int((session.expires_at - now).total_seconds())
        if ttl <= 0:
            return 0
        keys = [self._prefix + session.stored_token, self._list_key(session.user_id)]
        args = [document, ttl, session.stored_token, _ms(session.expires_at), _ms(now), replaces]
        return int(await self._call(self._store(keys=keys, args=args)))

    async def delete(
        self, user_id: str, tokens: Sequence[str], now: datetime, revoke_all_before: datetime | None = None
    ) -> None:
        """Delete sessions' documents and references; ``revoke_all_before``: also mark every session of the user
        created before then as revoked (Better Auth's revoked-sessions-before), wherever it is referenced."""
        revoked_key = self._revoked_key(user_id) if revoke_all_before is not None else self._list_key(user_id)
        await self._call(
            self._delete(
                keys=[self._list_key(user_id), revoked_key, *(self._prefix + t for t in tokens)],
                args=[
                    _ms(now),
                    _ms(revoke_all_before) if revoke_all_before is not None else 0,
                    self._revoked_ttl,
                    *tokens,
                ],
            )
        )

    async def tokens_of(self, user_id: str) -> list[str]:
        """The tokens in the user's list (live or not)."""
        raw = await self._get(self._list_key(user_id))
        if raw is None:
            return []
        try:
            items = json.loads(raw)
            return [str(item["token"]) for item in items if isinstance(item, dict) and "token" in item]
        except (ValueError, TypeError):
            return []

    async def sessions_of(self, user_id: str, now: datetime) -> list[SessionWithUser]:
        """The user's live sessions (Redis-only mode has no table to list them from)."""
        tokens = await self.tokens_of(user_id)
        if not tokens:
            return []
        raws = await self._call(self._redis.mget([self._prefix + t for t in tokens]))
        revoked_before = await self._get(self._revoked_key(user_id))
        floor = _number(revoked_before) if revoked_before is not None else 0
        found: dict[str, SessionWithUser] = {}
        for raw in raws:
            entry = self._decode(raw) if raw is not None else None
            if entry is None or entry.session.expires_at <= now or _ms(entry.session.created_at) < floor:
                continue
            found[entry.session.stored_token] = entry
        return list(found.values())

    async def rewrite_user(self, user: User) -> None:
        """Put the user's new snapshot into each of their session documents, as Better Auth's updateUser does;
        keys of the stored snapshot that this configuration does not know (plugins' fields) are kept."""
        snapshot = user_document(user, self._registry)
        for token in await self.tokens_of(user.id):
            key = self._prefix + token
            for _ in range(_ATTEMPTS):
                raw = await self._get(key)
                if raw is None:
                    break
                try:
                    doc = json.loads(raw)
                    doc["user"] = {**doc["user"], **snapshot}
                except (ValueError, KeyError, TypeError):
                    break
                if await self._call(self._swap(keys=[key], args=[raw, _dumps(doc)])):
                    break

    # -- verification values ---------------------------------------------------------------------------------

    def _verification_key(self, identifier: str) -> str:
        return f"{self._prefix}verification:{identifier}"

    async def put_verification(self, verification: Verification, now: datetime) -> None:
        """Store a verification value as Better Auth does, until it expires."""
        ttl = int((verification.expires_at - now).total_seconds())
        doc = {
            "id": verification.id,
            "identifier": verification.identifier,
            "value": verification.value,
            "expiresAt": iso(verification.expires_at),
            "createdAt": iso(verification.created_at),
            "updatedAt": iso(verification.updated_at),
        }
        if ttl > 0:
            key = self._verification_key(verification.identifier)
            await self._call(self._redis.set(key, json.dumps(doc, separators=(",", ":")), ex=ttl))

    async def take_verification(self, identifier: str, now: datetime) -> str | None:
        """Atomically remove a verification value and return it, if it had not expired."""
        raw = await self._call(self._redis.getdel(self._verification_key(identifier)))
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            expires_at = datetime.fromisoformat(doc["expiresAt"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        return str(doc["value"]) if expires_at > now else None

    async def has_verification(self, identifier: str) -> bool:
        """Whether a verification value is stored under the identifier."""
        return bool(await self._call(self._redis.exists(self._verification_key(identifier))))

    async def ping(self) -> None:
        """Raise BackendUnavailable unless Redis answers."""
        await self._call(self._redis.ping())

    async def close(self) -> None:
        """Close the connections."""
        if self._getter is not None:
            await self._getter.close()
        await self._redis.aclose()


def _as_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _dumps(doc: Any) -> str:
    """JSON as JavaScript's JSON.stringify writes it (compact, non-ASCII as is)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=str)


def _number(raw: bytes) -> float:
    try:
        return float(raw)
    except ValueError:
        return 0.0
