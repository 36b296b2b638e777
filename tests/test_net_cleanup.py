"""Everything a network makes is removed when it ends: however it ends, and after a crash by the next one."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time

import pytest

from chatlab import lab, net
from chatlab.net import netns
from net_support import needs_network

pytestmark = [needs_network, pytest.mark.timeout(90)]


def ours(token: str) -> list[str]:
    return [name for name in netns.namespaces() if name.startswith(f"chl-{token}-")]


def gone(pid: int) -> bool:
    """True once process ``pid`` has ended (reaped, or a zombie waiting for a parent that is not us)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.02)  # another process's end: nothing of ours to wait on
    return False


def test_an_exception_inside_the_with_block_still_removes_everything() -> None:
    seen: dict = {}
    with pytest.raises(ZeroDivisionError):
        with net.Network() as n:
            a, b = n.host("a"), n.host("b")
            seen.update(token=n.token, router=n._parts.router.pid, captures=n.captures,
                        record=n._parts.record.path)
            srv = b.start_server("threads")
            seen["bot"] = a.bot((b.address, srv.address[1]), "ada")
            seen["proc"] = a.popen(["sleep", "60"])
            assert len(ours(n.token)) == 2 and seen["record"].exists()
            1 / 0
    assert ours(seen["token"]) == [], "namespaces left behind"
    assert wait_gone(seen["router"]), "the router process is still running"
    assert gone(seen["proc"].pid), "a process started on a host is still running"
    assert not seen["captures"].exists(), "the temporary capture folder is still there"
    assert not seen["record"].exists(), "the ownership record is still there"
    assert seen["bot"] not in lab.running() and not [i for i in lab.running() if isinstance(i, net.Network)]


def test_a_forgotten_network_is_removed_when_its_handle_goes() -> None:
    n = net.Network()
    n.host("a")
    token, router = n.token, n._parts.router.pid
    del n
    gc.collect()
    assert ours(token) == [] and wait_gone(router)


def test_stop_all_stops_networks_like_every_other_instrument() -> None:
    n = net.Network()
    n.host("a")
    assert n in lab.running()
    lab.stop_all()
    assert not n.running and ours(n.token) == []
    n.stop()  # twice is fine


def test_processes_a_host_started_some_other_way_are_stopped_too() -> None:
    with net.Network() as n:
        a = n.host("a")
        # Started behind the network's back: only "ip netns pids" knows it is there.
        stray = subprocess.Popen(["ip", "netns", "exec", a.namespace, "sleep", "60"])
        try:
            deadline = time.monotonic() + 5
            while str(stray.pid) not in netns.ip("netns", "pids", a.namespace).split():
                assert time.monotonic() < deadline
                time.sleep(0.01)
        except BaseException:
            stray.kill()
            raise
    assert stray.wait(10) == -signal.SIGTERM


CRASHING_OWNER = """
import os, sys
from chatlab import net
n = net.Network()
a, b = n.host("a"), n.host("b")
srv = b.start_server("threads")
proc = a.popen(["sleep", "120"])
print(n.token, n._parts.router.pid, proc.pid, n.captures, flush=True)
sys.stdin.read()  # until killed
"""


def test_a_killed_owner_leaves_leftovers_that_the_next_network_removes() -> None:
    owner = subprocess.Popen([sys.executable, "-c", CRASHING_OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        token, router, sleeper, captures = owner.stdout.readline().split()
        assert len(ours(token)) == 2
        owner.kill()  # SIGKILL: no atexit, no finally, no finalizer runs
        owner.wait(10)
        # The router notices its control socket close and exits by itself...
        assert wait_gone(int(router)), "the router outlived the network's process"
        # ...but the namespaces, and a process running in one, remain: a crash cannot clean up.  (Unless
        # someone else's network, made this very moment on this machine, has cleaned them up already.)
        if ours(token):
            listing = subprocess.run([sys.executable, "-m", "chatlab", "net", "list"], capture_output=True,
                                     text=True, timeout=30).stdout
            assert token in listing and "owner gone" in listing
        with net.Network():  # the next network cleans up what dead owners left
            assert ours(token) == []
        assert wait_gone(int(sleeper)), "the process on a leftover host was not stopped"
        assert not os.path.exists(captures), "the leftover's temporary captures are still there"
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.stdout.close()
        owner.stdin.close()
        netns.clean()


def test_chatlab_net_clean_removes_leftovers_and_spares_live_networks() -> None:
    with net.Network() as live:  # made first: making a network would clean the leftovers itself
        live.host("a")
        owner = subprocess.Popen([sys.executable, "-c", CRASHING_OWNER], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        # A namespace with the lab's prefix that no record mentions (made by hand, say).
        stray = f"chl-{os.urandom(3).hex()}-stray"
        try:
            dead_token = owner.stdout.readline().split()[0]
            owner.kill()
            owner.wait(10)
            netns.ip("netns", "add", stray)
            out = subprocess.run([sys.executable, "-m", "chatlab", "net", "clean"], capture_output=True, text=True,
                                 timeout=60)
            assert out.returncode == 0, out.stderr
            # (2 of them ours -- unless another test's network, made meanwhile, cleaned them first)
            assert ours(dead_token) == [] and "removed " in out.stdout
            assert ours(live.token) == [f"chl-{live.token}-a"], "clean removed a live network's host"
            assert stray in netns.namespaces() and stray in out.stdout  # named, but not removed without --all
            # Only the stray, by name: other people's tests may be making namespaces right now.
            subprocess.run([sys.executable, "-m", "chatlab", "net", "clean", "--all", stray], capture_output=True,
                           timeout=60, check=True)
            assert stray not in netns.namespaces(), "--all left an unowned lab namespace"
            assert ours(live.token) == [f"chl-{live.token}-a"], "--all removed a live network's host"
        finally:
            if owner.poll() is None:
                owner.kill()
            owner.stdout.close()
            owner.stdin.close()
            netns.delete(stray)
            netns.clean()


@pytest.mark.timeout(120)
def test_interrupting_or_restarting_a_kernel_removes_its_networks() -> None:
    """What a student does: interrupt a cell inside ``with Network()``, then restart the kernel."""
    jupyter_client = pytest.importorskip("jupyter_client.manager")
    km, kc = jupyter_client.start_new_kernel(kernel_name="python3")

    def output_of(msg_id: str, timeout: float = 30) -> str:
        while True:
            msg = kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                return msg["content"]["text"]

    def reply_to(msg_id: str, timeout: float = 30) -> dict:
        while True:
            msg = kc.get_shell_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]

    try:
        kept = kc.execute("from chatlab import net\nn = net.Network()\nn.host('a')\nprint(n.token, flush=True)")
        kept_token = output_of(kept).strip()
        assert reply_to(kept)["status"] == "ok" and len(ours(kept_token)) == 1

        running = kc.execute("import time\nwith net.Network() as m:\n    m.host('a'); m.host('b')\n"
                             "    print(m.token, flush=True)\n    time.sleep(60)")
        interrupted_token = output_of(running).strip()
        assert len(ours(interrupted_token)) == 2
        km.interrupt_kernel()  # the stop button
        reply = reply_to(running)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
        assert ours(interrupted_token) == [], "the interrupted with-block left its hosts"
        assert len(ours(kept_token)) == 1, "the network made without 'with' lives on with the kernel"

        km.restart_kernel(now=False)  # Kernel -> Restart: the old kernel exits (atexit), a new one starts
        deadline = time.monotonic() + 20
        while ours(kept_token) and time.monotonic() < deadline:
            time.sleep(0.05)  # the old kernel is exiting in its own time
        assert ours(kept_token) == [], "the restarted kernel's network is still there"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        netns.clean()
