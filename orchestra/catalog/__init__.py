"""The model catalog: a local registry of GGUF model files, on SQLite in the data directory.

What is where:

- :mod:`orchestra.catalog.store`: the :class:`Catalog` itself, its operations run off the
  event loop, and the layout and guarantees of its database (atomic, concurrent,
  migratable), in the module docstring.
- :mod:`orchestra.catalog.model`: the values it hands out, :class:`CatalogModel`,
  :class:`TrustState` and :class:`ModelState`, and what a model id looks like.
- :mod:`orchestra.catalog.checks`: the checks of the arguments of a registration, each a
  problem line for a :class:`~orchestra.errors.Refusal`.
- :mod:`orchestra.catalog.database`: the blocking SQLite work: the file name, the schema and
  its migrations, connections and transactions.
- :mod:`orchestra.catalog.sqlite`: the SQLite shape every orchestra database takes (this
  one, the artifact index, the tools' audit): a connection per operation, ``BEGIN
  IMMEDIATE`` transactions, WAL, migrations by ``user_version``.

:class:`CatalogError` (a database that cannot be read or written) is
:class:`orchestra.errors.CatalogError`, re-exported here.
"""

from orchestra.catalog.database import BUSY_TIMEOUT_S as BUSY_TIMEOUT_S
from orchestra.catalog.database import DB_NAME as DB_NAME
from orchestra.catalog.database import SCHEMA_VERSION as SCHEMA_VERSION
from orchestra.catalog.model import ID_PATTERN as ID_PATTERN
from orchestra.catalog.model import CatalogModel as CatalogModel
from orchestra.catalog.model import ModelState as ModelState
from orchestra.catalog.model import TrustState as TrustState
from orchestra.catalog.store import Catalog as Catalog
from orchestra.errors import CatalogError as CatalogError

__all__ = [
    "BUSY_TIMEOUT_S",
    "DB_NAME",
    "SCHEMA_VERSION",
    "Catalog",
    "CatalogError",
    "CatalogModel",
    "ModelState",
    "TrustState",
]
