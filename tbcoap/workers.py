"""``--workers N``: N node processes on one machine, sharing the CoAP and HTTP ports.

The first node (in twistd's own process) binds the ports with ``SO_REUSEPORT``, then starts
N - 1 worker processes (``twistd -n tbcoap ... --worker K``) that bind the same ports the same
way; the kernel hashes each peer's address to one socket, so a device keeps talking to one
worker.  A worker's log lines carry ``[worker K, pid P]`` after the time.  Every worker is a full node on the shared store, with its own bus subscription.
The first node holds the data directory's lock for all; a worker stops when the first node's
process ends (its stdin closes), and SIGTERM to the first node stops every worker first.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from twisted.application.service import Service
from twisted.internet import defer, protocol, stdio
from twisted.logger import FileLogObserver, Logger, formatEventAsClassicLogText

log = Logger()
STOP_TIMEOUT = 30.0
WORKER_ENV = "TBCOAP_WORKER"  # the worker's number, for its log lines


def shared_udp(reactor, interface, port, protocol_, max_packet):
    """A UDP port bound with SO_REUSEPORT, served by ``protocol_``."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    return _adopt(sock, interface, port, lambda fd: reactor.adoptDatagramPort(fd, family, protocol_, max_packet))


def shared_tcp(reactor, interface, port, factory, backlog=50):
    """A listening TCP port bound with SO_REUSEPORT, served by ``factory``."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)

    def adopt(fd):
        sock.listen(backlog)
        return reactor.adoptStreamPort(fd, family, factory)

    return _adopt(sock, interface, port, adopt)


def _adopt(sock, interface, port, adopt):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((interface, port))
        sock.setblocking(False)
        return adopt(sock.fileno())  # the reactor keeps a duplicate of the descriptor
    finally:
        sock.close()


class _Worker(protocol.ProcessProtocol):
    """One worker process: its exit is reported to the supervisor."""

    def __init__(self, supervisor, number):
        self.supervisor, self.number = supervisor, number
        self.ended = defer.Deferred()

    def processEnded(self, reason):
        code = reason.value.exitCode
        if not self.supervisor.stopping:
            log.error("worker {number} ended (exit status {code})", number=self.number, code=code)
        self.ended.callback(code)


class WorkerSupervisor(Service):
    """Starts the worker processes once the first node has bound its ports, stops them first."""

    def __init__(self, node, count, argv):
        self.node, self.count, self.argv = node, count, argv
        self.workers = []
        self.stopping = False

    def start_workers(self):
        """Called by the first node after it bound its ports (their numbers go to the workers)."""
        host, coap_port = self.node.coap_address
        _, http_port = self.node.http_address
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        for number in range(1, self.count):
            env = {**os.environ, "TBCOAP_ADMIN_KEY": self.node.admin_key, WORKER_ENV: str(number)}
            args = [twistd, "-n", "--pidfile=", f"--logger={__name__}.worker_log_observer", "tbcoap", *self.argv,
                    "--coap-port", str(coap_port), "--coap-interface", host, "--http-port", str(http_port),
                    "--workers", str(self.count), "--worker", str(number)]
            if self.node.coaps_address is not None:
                coaps_host, coaps_port = self.node.coaps_address
                args += ["--coaps-port", str(coaps_port), "--coaps-interface", coaps_host]
            worker = _Worker(self, number)
            worker.transport = self.node.reactor.spawnProcess(
                worker, twistd, args, env=env, childFDs={0: "w", 1: 1, 2: 2})
            self.workers.append(worker)
        log.info("started {n} worker processes (pids {pids}) beside this node (pid {pid})", n=self.count - 1,
                 pids=", ".join(str(w.transport.pid) for w in self.workers), pid=os.getpid())

    @defer.inlineCallbacks
    def stopService(self):
        """SIGTERM to every worker, then wait for them (SIGKILL after STOP_TIMEOUT)."""
        super().stopService()
        self.stopping = True
        for worker in self.workers:
            if not worker.ended.called:
                worker.transport.signalProcess("TERM")
        waiting = defer.DeferredList([w.ended for w in self.workers])
        timer = self.node.reactor.callLater(STOP_TIMEOUT, self._kill)
        yield waiting
        if timer.active():
            timer.cancel()

    def _kill(self):
        for worker in self.workers:
            if not worker.ended.called:
                worker.transport.signalProcess("KILL")


class _ParentWatch(protocol.Protocol):
    """A worker's stdin: when the first node's process is gone, so is the pipe; stop too."""

    def __init__(self, reactor):
        self.reactor = reactor

    def connectionLost(self, reason):
        if self.reactor.running:
            log.warn("the first node is gone: this worker stops")
            os.kill(os.getpid(), signal.SIGTERM)


def watch_parent(reactor):
    """In a worker: stop when stdin (the pipe from the first node) closes."""
    return stdio.StandardIO(_ParentWatch(reactor), reactor=reactor)


def worker_log_observer():
    """twistd's ``--logger`` for a worker: the usual lines on stdout, each tagged with the worker's
    number and pid (``2026-01-01T00:00:00+0000 [worker 2, pid 123] [tbcoap.node#info] ...``)."""
    tag = f"[worker {os.environ.get(WORKER_ENV, '?')}, pid {os.getpid()}] "

    def tagged(event):
        line = formatEventAsClassicLogText(event)
        if line is None:
            return None
        stamp, space, rest = line.partition(" ")
        return f"{stamp}{space}{tag}{rest}"

    return FileLogObserver(sys.stdout, tagged)
