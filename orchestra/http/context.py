"""What the HTTP face talks to: the service's actors, handed to each blueprint when the
app is built. Handlers call their methods; they never read or change their fields."""

from __future__ import annotations

import attrs

from orchestra.actors.admission import Admission
from orchestra.actors.pool_control import PoolControl
from orchestra.actors.queue import Queue
from orchestra.actors.supervisor import Supervisor
from orchestra.catalog import Catalog
from orchestra.config import Config
from orchestra.obs.metrics import Metrics


@attrs.frozen
class Actors:
    """The actors of one service, and its configuration."""

    config: Config
    admission: Admission
    queue: Queue
    supervisor: Supervisor
    control: PoolControl
    catalog: Catalog
    metrics: Metrics
