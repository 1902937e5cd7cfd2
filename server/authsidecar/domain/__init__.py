"""Plain domain records and the ports (Protocols) services depend on."""

from authsidecar.domain.models import Account, Session, SessionWithUser, User
from authsidecar.domain.ports import Database, SessionCache, UnitOfWork

__all__ = ["Account", "Database", "Session", "SessionCache", "SessionWithUser", "UnitOfWork", "User"]
