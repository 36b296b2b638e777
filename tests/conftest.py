"""Shared fixtures: live servers on 127.0.0.1, port 0, always stopped."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterator

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
    """Start servers of the current model with chosen limits; all are stopped at the end.

    ``start(rate_limit=0)`` changes one limit; ``start(Limits.off())`` runs
    with every defence off; ``accounts=...``, ``tls=...`` and ``listeners=...``
    (more ports, each with its dialect) pass through.
    """
    started: list[BaseServer] = []

    def start(limits: Limits | None = None, *, accounts: Any = None, tls: Any = None, listeners: Any = (),
              **fields: Any) -> BaseServer:
        limits = dataclasses.replace(limits or Limits(), **fields)
        server = make_server(model, "127.0.0.1", 0, limits, accounts=accounts, tls=tls, listeners=listeners)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "limits(**fields): the limits the `server` fixture runs with")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak-seconds", type=float, default=None,
                     help="seconds each soak test runs (default: a short form of a few seconds; "
                          "also the CHATLAB_SOAK_SECONDS environment variable)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A soak test's deadline grows with the soak time it is given.
    seconds = config.getoption("--soak-seconds") or float(os.environ.get("CHATLAB_SOAK_SECONDS") or 0)
    for item in items:
        if item.get_closest_marker("soak"):
            item.add_marker(pytest.mark.timeout(2 * max(seconds, 10) + 120))


@pytest.fixture
def server(request: pytest.FixtureRequest, start_server: Callable[..., BaseServer]) -> BaseServer:
    """A server of the current model, with the default limits unless the test is marked
    ``@pytest.mark.limits(rate_limit=0)`` (for throughput tests that send faster than a person)."""
    marker = request.node.get_closest_marker("limits")
    return start_server(**(marker.kwargs if marker else {}))


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
