"""The course: exercises for students, reference solutions, and the checks.

How the pieces fit:

* ``solutions/exNN_*.py`` are written once, with marked solution regions
  (``# BEGIN SOLUTION`` ... ``# END SOLUTION``, see ``generate``).
* ``exercises/exNN_*.py`` are generated from them (``chatlab course
  generate``): each region becomes ``# TODO`` guidance and a
  ``raise NotImplementedError(hint)``.  They are committed, and a test
  keeps them equal to what the generator makes.
* ``checks/exNN.py`` hold the checks of each exercise: real sockets on
  127.0.0.1 and port 0, a transcript of every step.
* ``runner`` runs each check in a child process of its own, with a timeout,
  so that a student's hang or crash cannot take the checker down, and
  prints a points table (``chatlab check``) or writes JSON for a grade book.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Exercise:
    number: int
    module: str  # the file name without .py, the same in exercises/ and solutions/
    title: str
    notebook: str  # where the concept is explained and shown live

    @property
    def filename(self) -> str:
        return self.module + ".py"


EXERCISES: tuple[Exercise, ...] = (
    Exercise(1, "ex01_echo", "A TCP echo server and client: the socket life cycle", "notebooks/01_sockets.ipynb"),
    Exercise(2, "ex02_reliable", "Reliable sending and receiving: send_all, recv_exactly", "notebooks/02_byte_stream.ipynb"),
    Exercise(3, "ex03_lines", "Line framing: a decoder with a maximum line length", "notebooks/02_byte_stream.ipynb"),
    Exercise(4, "ex04_frames", "Length-prefixed framing: the limit checked at the header", "notebooks/02_byte_stream.ipynb"),
    Exercise(5, "ex05_broadcast", "A broadcast server: a thread per client, a list and its lock", "notebooks/03_thread_server.ipynb"),
    Exercise(6, "ex06_names", "Names and notices: registration, join and leave once", "notebooks/03_thread_server.ipynb"),
    Exercise(7, "ex07_client", "The client: a send thread, a receive thread, a clean close", "notebooks/03_thread_server.ipynb"),
    Exercise(8, "ex08_selectors", "One thread for everyone: a selectors event loop", "notebooks/05_concurrency_models.ipynb"),
    Exercise(9, "ex09_slow_clients", "Slow clients: a bounded outbox and a writer per client", "notebooks/06_reliability.ipynb"),
    Exercise(10, "ex10_wire", "On the wire: IPv4 and TCP headers, a connection from SYN to FIN",
             "notebooks/12_tcp_reliability.ipynb"),
)


def exercise(number: int) -> Exercise:
    for ex in EXERCISES:
        if ex.number == number:
            return ex
    raise ValueError(f"there is no exercise {number}; they are numbered 1 to {len(EXERCISES)}")
