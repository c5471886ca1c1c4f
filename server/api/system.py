"""Health and server information."""

from importlib.metadata import version
from typing import Any

from fastapi import APIRouter

from server.api.deps import ServicesDep

router = APIRouter(tags=["system"])


@router.get("/ok")
async def ok() -> dict[str, bool]:
    """Liveness: the process answers."""
    return {"ok": True}


@router.get("/info")
async def info(svc: ServicesDep) -> dict[str, Any]:
    """Version, graphs and features of this server."""
    return {
        "version": version("relaygraph"),
        "langgraph_version": version("langgraph"),
        "graphs": svc.graphs.ids(),
        "model": svc.model_label,
        "storage": svc.db.kind,
        "flags": {"assistants": True, "crons": True, "device_protocol": 1},
    }
