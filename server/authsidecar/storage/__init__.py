"""SQL storage: schema definition, engine, unit of work and repositories, driver-error translation."""

from authsidecar.storage.database import SqlDatabase, create_database
from authsidecar.storage.schema import Schema

__all__ = ["Schema", "SqlDatabase", "create_database"]
