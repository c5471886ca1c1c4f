"""The FastAPI application: storage, graphs, devices and the run workers, set up at start."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from langchain_core.language_models import BaseChatModel

from checkpoints import open_checkpointers, open_database, open_graph_store
from llm import load_chat_model
from server.api import assistants, crons, devices, runs, system, threads
from server.api.guard import RequestGuard
from server.events import RunEvents
from server.graphs import GraphRegistry
from server.hub import DeviceHub
from server.locks import ThreadLocks
from server.runs import RunManager
from server.scheduler import Scheduler
from server.services import Services
from server.settings import Settings


def create_app(settings: Settings | None = None, *, model: BaseChatModel | None = None) -> FastAPI:
    """The server app; storage opens (and migrates) when it starts. `model` replaces the one
    the environment configures (benchmarks and tests pass scripted ones)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.database_url
        async with (
            open_checkpointers(
                url,
                count=settings.savers,
                pool_size=settings.pool_size,
                keep_latest=settings.checkpoint_cache,
            ) as savers,
            open_graph_store(url) as store,
            open_database(
                url, pool_size=settings.pool_size, prepare=settings.prepared_statements
            ) as db,
        ):
            choice = load_chat_model()
            graphs = GraphRegistry(model or choice.model, savers, store)
            hub, events = DeviceHub(), RunEvents()
            manager = RunManager(
                db=db,
                graphs=graphs,
                hub=hub,
                events=events,
                locks=ThreadLocks(db),
                workers=settings.workers,
                durability=settings.durability,
                checkpoint_marks=settings.checkpoint_cache > 0,
            )
            app.state.services = Services(
                settings=settings,
                db=db,
                graphs=graphs,
                hub=hub,
                events=events,
                runs=manager,
                model_label=choice.label,
            )
            scheduler = Scheduler(
                db=db, runs=manager, hub=hub, interval=settings.scheduler_interval
            )
            app.state.services.scheduler = scheduler
            await manager.start()
            await scheduler.start()
            try:
                yield
            finally:
                await scheduler.stop()
                await manager.stop()

    app = FastAPI(
        redirect_slashes=False,
        title="relaygraph",
        description="LangGraph agents whose tools act on the user's device.",
        lifespan=lifespan,
    )
    app.add_middleware(RequestGuard, max_body=settings.max_body_bytes)
    for module in (system, assistants, threads, runs, crons, devices):
        app.include_router(module.router)
    return app
