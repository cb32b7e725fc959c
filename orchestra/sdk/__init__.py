"""The orchestra SDK: one typed entry point for programs that use an orchestra server.

::

    from orchestra.sdk import Client, TaskRequest

    with Client("http://127.0.0.1:8080") as client:        # or Client.embedded()
        print(client.complete("Once upon a time", max_tokens=32, seed=1).text)

``chat()`` and ``stream_chat()`` talk to the OpenAI face (``POST /v1/chat/completions``)::

    with Client() as client:
        with client.stream_chat([{"role": "user", "content": "Hi"}]) as stream:
            for delta in stream:
                print(delta.content, end="")

Several models: ``models()`` lists them with their residency, ``load_model(id_or_path)`` and
``unload_model(id)`` move them in and out of memory, ``model=`` on a call (or
``default_model=`` on the client) picks one, and ``embed(texts)`` returns vectors::

    with Client(default_model="gemma3") as client:
        client.chat(messages, model="qwen")       # this call only
        client.embed(["a", "b"], model="nomic").vectors

Artifacts: ``put_artifact(content, kind=...)`` keeps text or bytes under the id of their
hash, with tags and parents; ``get_artifact``, ``read_artifact``, ``list_artifacts``,
``lineage``, ``tag_artifact`` and ``delete_artifact`` read and change them, and a task (or
a chat) with ``artifact="summary"`` keeps its output, its id in the ``End`` event::

    with Client() as client:
        plan = client.put_artifact("1. read\n2. write", kind="plan", tags=["v1"])
        done = client.complete("Summarise", artifact={"kind": "summary", "tags": ["v1"]})
        client.read_artifact(done.artifact_id)

Operations: ``list_tasks(state=..., pool=..., limit=...)`` lists the running, waiting and
ended tasks (no prompts), ``replica_sets()`` each pool's engines and the tokens it sent,
``drain(pool)`` / ``resume(pool)`` stop and restart taking tasks::

    with Client() as client:
        for task in client.list_tasks(state=["running", "queued"]):
            print(task.task_id, task.state, task.queue_position, task.tokens_out)

``AsyncClient`` is the same API for Trio code. Every error is an
:class:`OrchestraError`: :class:`TransportError` (no answer), :class:`ParseError` (an answer
outside the contract) or :class:`ServerError` (the server's error envelope, with
:class:`QueueFull` for a full queue, :class:`BudgetExceeded` for a spent session budget and
:class:`TaskFailed` for a stream that ended in error).
"""

from orchestra import API_VERSION as API_VERSION
from orchestra import __version__ as __version__
from orchestra.errors import ErrorCode as ErrorCode
from orchestra.sdk._artifacts import Artifact as Artifact
from orchestra.sdk._artifacts import ArtifactPage as ArtifactPage
from orchestra.sdk._artifacts import Lineage as Lineage
from orchestra.sdk._artifacts import LineageNode as LineageNode
from orchestra.sdk._async import AsyncClient as AsyncClient
from orchestra.sdk._chat import ChatCompletion as ChatCompletion
from orchestra.sdk._chat import ChatDelta as ChatDelta
from orchestra.sdk._chat import ChatMessage as ChatMessage
from orchestra.sdk._chat import ChatRequest as ChatRequest
from orchestra.sdk._chat import FunctionCall as FunctionCall
from orchestra.sdk._chat import ToolCall as ToolCall
from orchestra.sdk._chat import ToolCallDelta as ToolCallDelta
from orchestra.sdk._chat import Usage as Usage
from orchestra.sdk._errors import BudgetExceeded as BudgetExceeded
from orchestra.sdk._errors import OrchestraError as OrchestraError
from orchestra.sdk._errors import ParseError as ParseError
from orchestra.sdk._errors import QueueFull as QueueFull
from orchestra.sdk._errors import ServerError as ServerError
from orchestra.sdk._errors import TaskFailed as TaskFailed
from orchestra.sdk._errors import TransportError as TransportError
from orchestra.sdk._events import End as End
from orchestra.sdk._events import Error as Error
from orchestra.sdk._events import Event as Event
from orchestra.sdk._events import Metrics as Metrics
from orchestra.sdk._events import Started as Started
from orchestra.sdk._events import Token as Token
from orchestra.sdk._models import BudgetLeft as BudgetLeft
from orchestra.sdk._models import CancelResult as CancelResult
from orchestra.sdk._models import Capabilities as Capabilities
from orchestra.sdk._models import CatalogModel as CatalogModel
from orchestra.sdk._models import Completion as Completion
from orchestra.sdk._models import DeletedSession as DeletedSession
from orchestra.sdk._models import DrainResult as DrainResult
from orchestra.sdk._models import Embeddings as Embeddings
from orchestra.sdk._models import EngineInfo as EngineInfo
from orchestra.sdk._models import Health as Health
from orchestra.sdk._models import Limits as Limits
from orchestra.sdk._models import PoolInfo as PoolInfo
from orchestra.sdk._models import PredictionAccuracy as PredictionAccuracy
from orchestra.sdk._models import Replica as Replica
from orchestra.sdk._models import ReplicaModel as ReplicaModel
from orchestra.sdk._models import ReplicaSet as ReplicaSet
from orchestra.sdk._models import ResumeResult as ResumeResult
from orchestra.sdk._models import ServedModel as ServedModel
from orchestra.sdk._models import SessionLimits as SessionLimits
from orchestra.sdk._models import SessionStatus as SessionStatus
from orchestra.sdk._models import SloWindow as SloWindow
from orchestra.sdk._models import TaskHandle as TaskHandle
from orchestra.sdk._models import TaskRequest as TaskRequest
from orchestra.sdk._models import TaskStatus as TaskStatus
from orchestra.sdk._models import TaskSummary as TaskSummary
from orchestra.sdk._models import UnloadedModel as UnloadedModel
from orchestra.sdk._openai import ChatStream as ChatStream
from orchestra.sdk._retry import Retry as Retry
from orchestra.sdk._sync import Client as Client
from orchestra.sdk._sync import SyncChatStream as SyncChatStream
from orchestra.task import Determinism as Determinism
from orchestra.task import KeepArtifact as KeepArtifact
from orchestra.task import Priority as Priority
from orchestra.task import TaskState as TaskState
