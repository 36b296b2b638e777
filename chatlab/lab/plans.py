"""Plans: a room of bots that join, chat and leave on a schedule.

``run_plan`` gives each bot a thread and a script (``Plan``), on one shared
clock, and keeps the plan's *order* even when a busy machine makes a bot
late -- so that what the recorder shows is what the plan meant.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .bots import Bot
from .recorder import Recorder
from .registry import TIMEOUT, clock


@dataclass
class Plan:
    """One bot's script: join at ``join_at``, say each text at its time, leave at ``leave_at`` (seconds)."""

    name: str
    join_at: float
    says: list[tuple[float, str]] = field(default_factory=list)
    leave_at: float = 1.0


def chat_plan(bots: int = 3, messages: int = 3, gap: float = 0.05, stagger: float = 0.05) -> list[Plan]:
    """Bots that join one after another, chat in turn, and leave one after another."""
    plans = []
    talk_start = stagger * bots
    talk_end = talk_start + gap * messages * bots
    for i in range(bots):
        name = f"bot{i + 1}"
        says = [(talk_start + gap * (k * bots + i), f"{name} #{k + 1}") for k in range(messages)]
        plans.append(Plan(name, stagger * i, says, talk_end + gap + stagger * i))
    return plans


def run_plan(address: tuple[str, int], plans: list[Plan], recorder: Recorder | None = None,
             mode: str = "frames", timeout: float = TIMEOUT) -> list[Bot]:
    """Run every plan, one thread per bot, on a shared clock; return the (closed) bots.

    The times are a schedule, but on a busy machine a bot may fall behind
    it -- and a message said before a late bot has registered is one that
    bot never hears.  So the plan's *order* is kept whatever the clock says:
    a bot says something at ``t`` only once every bot due before ``t`` has
    joined, and leaves at ``leave_at`` only once every message due before
    then has been handled by the server (frames mode: the sender has its
    own copy back; lines mode: the message was sent).  Before leaving it also waits until it has heard
    them: in frames mode with a ping (a barrier), in lines mode by waiting
    for the texts themselves.  Every wait is bounded by ``timeout``.
    """
    recorder = recorder if recorder is not None else Recorder()
    bots = [Bot(address, p.name, recorder, mode, timeout) for p in plans]
    errors: list[BaseException] = []
    done: set[Any] = set()  # plan names that have joined, and (name, text) said (or given up)
    progress = threading.Condition()
    t0 = clock()

    def until(t: float) -> None:
        delay = t0 + t - clock()
        if delay > 0:
            time.sleep(delay)  # the schedule: bots act at chosen times, not before

    def happened(*things: Any) -> None:
        with progress:
            done.update(things)
            progress.notify_all()

    def after(things: set[Any], what: str) -> None:
        with progress:
            if not progress.wait_for(lambda: things <= done, timeout):
                raise TimeoutError(f"waited {timeout:g} s for {what}: {sorted(map(str, things - done))[:3]}")

    def expected_for(plan: Plan) -> set[tuple[str, str]]:
        """Messages from others said while ``plan``'s bot is in the room."""
        return {(p.name, text) for p in plans if p is not plan
                for t, text in p.says if plan.join_at < t < plan.leave_at}

    def act(bot: Bot, plan: Plan) -> None:
        try:
            until(plan.join_at)
            bot.join()
            happened(plan.name)
            for t, text in plan.says:
                until(t)
                after({p.name for p in plans if p.join_at < t}, "the bots due to join first")
                bot.say(text)
                if mode == "frames":
                    # Sent is not yet handled: the server has broadcast it once
                    # our own copy is back (a frames client gets its own messages).
                    bot.wait_for(lambda m: m["type"] == "message" and m["from"] == bot.name and m["text"] == text,
                                 what="our own message back")
                happened((plan.name, text))
            until(plan.leave_at)
            after(expected_for(plan), "the messages due before leaving")
            if mode == "frames":
                bot.ping()  # a barrier: everything sent to us before it has arrived
            else:
                _await_texts(bot, expected_for(plan), timeout)
            bot.leave()
        except BaseException as exc:
            errors.append(exc)
            bot.stop()
        finally:  # never leave the others waiting for what this bot will not do
            happened(plan.name, *((plan.name, text) for _, text in plan.says))

    threads = [threading.Thread(target=act, args=(b, p), name=f"chatlab-plan-{p.name}", daemon=True)
               for b, p in zip(bots, plans)]
    for t in threads:
        t.start()
    deadline = clock() + max(p.leave_at for p in plans) + 4 * timeout
    try:
        for t in threads:
            t.join(max(0.0, deadline - clock()))
    finally:
        for b in bots:
            b.stop()
        for t in threads:
            t.join(timeout)
    if errors:
        raise errors[0]
    return bots


def _await_texts(bot: Bot, wanted: set[tuple[str, str]], timeout: float) -> None:
    """Wait until ``bot`` heard these (sender, text) messages, or ``timeout`` passed.

    Lines mode has no barrier every server understands (the course's servers
    may not answer ``/ping``), so this is best effort: whatever never arrived
    is simply missing from the record, where a table or plot will show it.
    """
    missing = set(wanted)

    def heard(msg: dict[str, Any]) -> bool:
        missing.discard((msg.get("from"), msg.get("text")))
        return not missing

    if missing:
        try:
            bot.wait_for(heard, timeout, what="the others' messages")
        except TimeoutError:
            pass


