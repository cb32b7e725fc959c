"""The agents' tools (issue 19): ``http_fetch`` and ``search`` behind a policy, audited.

What is where (each module imports only those above it in this list):

- :mod:`orchestra.tools.addresses`: which IP addresses are private, loopback, metadata...
  (pure);
- :mod:`orchestra.tools.policy`: ``[tools.policy]`` compiled, and its decisions (pure);
- :mod:`orchestra.tools.resolve`: the :class:`Resolver` a fetch asks, once per hop;
- :mod:`orchestra.tools.redact`: which values are secret, and their removal;
- :mod:`orchestra.tools.hook`: the policy hook's signature (:class:`ToolCall` in,
  :class:`Refuse` or a rewritten call out), its loading and its consultation;
- :mod:`orchestra.tools.audit`: every call in SQLite (``tools-audit.sqlite3``), off the
  event loop;
- :mod:`orchestra.tools.fetch`: ``http_fetch`` over the network, hop by hop;
- :mod:`orchestra.tools.search`: ``search`` through SearXNG;
- :mod:`orchestra.tools.calls`: the requests and answers the HTTP face exchanges;
- :mod:`orchestra.tools.service`: :class:`Tools`, the facade that limits, redacts, audits
  and logs every call.

The contract is ``specs/tools.md`` and ``specs/openapi/tools.yaml``.
"""

from orchestra.tools.audit import AuditEntry as AuditEntry
from orchestra.tools.audit import AuditPage as AuditPage
from orchestra.tools.audit import AuditQuery as AuditQuery
from orchestra.tools.calls import FetchRequest as FetchRequest
from orchestra.tools.calls import FetchResult as FetchResult
from orchestra.tools.calls import SearchRequest as SearchRequest
from orchestra.tools.calls import SearchResult as SearchResult
from orchestra.tools.calls import ToolsStatistics as ToolsStatistics
from orchestra.tools.hook import Hook as Hook
from orchestra.tools.hook import Refuse as Refuse
from orchestra.tools.hook import ToolCall as ToolCall
from orchestra.tools.resolve import Resolver as Resolver
from orchestra.tools.resolve import SystemResolver as SystemResolver
from orchestra.tools.search import SearchHit as SearchHit
from orchestra.tools.service import Tools as Tools

__all__ = [
    "AuditEntry",
    "AuditPage",
    "AuditQuery",
    "FetchRequest",
    "FetchResult",
    "Hook",
    "Refuse",
    "Resolver",
    "SearchHit",
    "SearchRequest",
    "SearchResult",
    "SystemResolver",
    "ToolCall",
    "Tools",
    "ToolsStatistics",
]
