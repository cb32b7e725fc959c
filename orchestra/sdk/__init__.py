"""The orchestra SDK: one typed entry point for programs that use an orchestra server.

::

    from orchestra.sdk import Client, TaskRequest

    with Client("http://127.0.0.1:8080") as client:        # or Client.embedded()
        print(client.complete("Once upon a time", max_tokens=32, seed=1).text)

``AsyncClient`` is the same API for Trio code. Every error is an
:class:`OrchestraError`: :class:`TransportError` (no answer), :class:`ParseError` (an answer
outside the contract) or :class:`ServerError` (the server's error envelope, with
:class:`QueueFull` for a full queue, :class:`BudgetExceeded` for a spent session budget and
:class:`TaskFailed` for a stream that ended in error).
"""

from .. import API_VERSION as API_VERSION
from .. import __version__ as __version__
from ..errors import ErrorCode as ErrorCode
from ..task import Determinism as Determinism
from ..task import Priority as Priority
from ..task import TaskState as TaskState
from ._async import AsyncClient as AsyncClient
from ._errors import BudgetExceeded as BudgetExceeded
from ._errors import OrchestraError as OrchestraError
from ._errors import ParseError as ParseError
from ._errors import QueueFull as QueueFull
from ._errors import ServerError as ServerError
from ._errors import TaskFailed as TaskFailed
from ._errors import TransportError as TransportError
from ._models import BudgetLeft as BudgetLeft
from ._models import CancelResult as CancelResult
from ._models import Capabilities as Capabilities
from ._models import CatalogModel as CatalogModel
from ._models import Completion as Completion
from ._models import DeletedSession as DeletedSession
from ._models import End as End
from ._models import EngineInfo as EngineInfo
from ._models import Error as Error
from ._models import Event as Event
from ._models import Health as Health
from ._models import Limits as Limits
from ._models import Metrics as Metrics
from ._models import PoolInfo as PoolInfo
from ._models import ServedModel as ServedModel
from ._models import SessionLimits as SessionLimits
from ._models import SessionStatus as SessionStatus
from ._models import Started as Started
from ._models import TaskHandle as TaskHandle
from ._models import TaskRequest as TaskRequest
from ._models import TaskStatus as TaskStatus
from ._models import Token as Token
from ._retry import Retry as Retry
from ._sync import Client as Client
