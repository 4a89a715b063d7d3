"""The gRPC servicers of the core."""

from server.services.generations import GenerationServicer
from server.services.projects import ProjectServicer

__all__ = ["GenerationServicer", "ProjectServicer"]
