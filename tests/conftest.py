"""Shared fixtures: live servers on 127.0.0.1, port 0, always stopped."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from chatlab.limits import Limits
from chatlab.servers import MODELS, BaseServer, make_server
from chatlab.testing import Transcript, frames_client


@pytest.fixture(params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> str:
    """Each server model in turn: the same behaviour is required of all of them."""
    return request.param


@pytest.fixture
def start_server(model: str) -> Iterator[Callable[..., BaseServer]]:
    """Start servers of the current model with chosen limits; all are stopped at the end."""
    started: list[BaseServer] = []

    def start(**limits: int) -> BaseServer:
        server = make_server(model, "127.0.0.1", 0, Limits(**limits))
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., BaseServer]) -> BaseServer:
    return start_server()


@pytest.fixture
def transcript() -> Transcript:
    return Transcript()


@pytest.fixture
def clients(server: BaseServer, transcript: Transcript):
    """A factory of registered frames clients sharing one transcript; all closed at the end."""
    made = []

    def make(name: str | None = None, **kwargs):
        client = frames_client(server.address, name, transcript, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
