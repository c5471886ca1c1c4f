"""The objects a running server shares, built once at start-up."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from checkpoints import Database
from server.events import RunEvents
from server.graphs import GraphRegistry
from server.hub import DeviceHub
from server.runs import RunManager
from server.settings import Settings

if TYPE_CHECKING:
    from server.scheduler import Scheduler


@dataclass
class Services:
    """Settings, storage, graphs, devices and the run manager of one server process."""

    settings: Settings
    db: Database
    graphs: GraphRegistry
    hub: DeviceHub
    events: RunEvents
    runs: RunManager
    model_label: str
    scheduler: "Scheduler | None" = None
