"""The queue, batching, retries and closing, on a fake clock; and the JSON events."""

import json

import pytest
from twisted.internet import defer, error, task

from tbcoap.models import Device, Json
from tbcoap_webhook.events import attributes_event, batch_body, encode, telemetry_event
from tbcoap_webhook.forwarder import Forwarder


class Endpoint:
    """A fake ``post``: records each batch with the clock time; the test answers each call."""

    def __init__(self, clock):
        self.clock = clock
        self.calls = []  # [time, events, Deferred]

    def post(self, body):
        d = defer.Deferred()
        self.calls.append([self.clock.seconds(), json.loads(body), d])
        return d

    def answer(self, result):
        """Fire the pending call with a status code, or fail it with an exception."""
        d = self.calls[-1][2]
        d.errback(result) if isinstance(result, Exception) else d.callback(result)

    def batches(self):
        return [events for _, events, _ in self.calls]


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def endpoint(clock):
    return Endpoint(clock)


def forwarder(endpoint, **settings):
    return Forwarder(endpoint.post, endpoint.clock, **settings)


def add(fwd, *numbers):
    return [fwd.add(encode({"n": n})) for n in numbers]


def test_a_full_batch_goes_at_once(endpoint):
    fwd = forwarder(endpoint, batch_size=3)
    add(fwd, 1, 2)
    assert endpoint.calls == []
    add(fwd, 3)
    assert endpoint.batches() == [[{"n": 1}, {"n": 2}, {"n": 3}]]


def test_a_partial_batch_goes_batch_wait_after_its_first_event(clock, endpoint):
    fwd = forwarder(endpoint, batch_size=10, batch_wait=1.0)
    add(fwd, 1)
    clock.advance(0.6)
    add(fwd, 2)
    clock.advance(0.39)
    assert endpoint.calls == []
    clock.advance(0.01)
    assert endpoint.batches() == [[{"n": 1}, {"n": 2}]]


def test_one_post_at_a_time_in_order(clock, endpoint):
    fwd = forwarder(endpoint, batch_size=2, batch_wait=1.0)
    add(fwd, 1, 2, 3, 4, 5)
    assert len(endpoint.calls) == 1 and fwd.stats()["queued"] == 5
    endpoint.answer(200)
    assert endpoint.batches()[1] == [{"n": 3}, {"n": 4}]  # full: sent as soon as the first is done
    endpoint.answer(204)
    assert len(endpoint.calls) == 2  # 5 alone waits for its batch-wait
    clock.advance(1.0)
    assert endpoint.batches()[2] == [{"n": 5}]
    endpoint.answer(200)
    assert fwd.stats() == {"queued": 0, "sent": 5, "batches": 3, "retries": 0, "dropped": 0, "failed": 0,
                           "lastError": None}


def test_a_batch_whose_wait_ran_out_during_a_post_goes_right_after_it(clock, endpoint):
    fwd = forwarder(endpoint, batch_size=10, batch_wait=1.0)
    add(fwd, 1)
    clock.advance(1.0)
    add(fwd, 2)
    clock.advance(5.0)
    assert len(endpoint.calls) == 1
    endpoint.answer(200)
    assert endpoint.batches() == [[{"n": 1}], [{"n": 2}]]


def test_retries_back_off_doubling_up_to_30_s(clock, endpoint):
    fwd = forwarder(endpoint, batch_size=1, retries=6, backoff=4.0)
    add(fwd, 1)
    for _ in range(6):
        endpoint.answer(500)
        calls = len(endpoint.calls)
        while len(endpoint.calls) == calls:
            clock.advance(0.5)
    endpoint.answer(500)
    times = [t for t, _, _ in endpoint.calls]
    assert [b - a for a, b in zip(times, times[1:])] == [4, 8, 16, 30, 30, 30]
    assert all(events == [{"n": 1}] for events in endpoint.batches())
    stats = fwd.stats()
    assert (stats["retries"], stats["failed"], stats["sent"], stats["queued"]) == (6, 1, 0, 0)
    assert stats["lastError"] == "HTTP 500"


@pytest.mark.parametrize("answer", [500, 503, 408, 429, error.ConnectionRefusedError()])
def test_retried_answers(clock, endpoint, answer):
    fwd = forwarder(endpoint, batch_size=1, retries=1, backoff=0.5)
    add(fwd, 1)
    endpoint.answer(answer)
    clock.advance(0.5)
    assert len(endpoint.calls) == 2
    endpoint.answer(201)
    stats = fwd.stats()
    assert (stats["sent"], stats["retries"], stats["failed"]) == (1, 1, 0)
    assert stats["lastError"].startswith("HTTP" if isinstance(answer, int) else "ConnectionRefusedError")


@pytest.mark.parametrize("code", [400, 401, 404, 413, 301])
def test_refused_batches_are_not_retried(clock, endpoint, code):
    fwd = forwarder(endpoint, batch_size=1, retries=5)
    add(fwd, 1, 2)
    endpoint.answer(code)
    assert endpoint.batches() == [[{"n": 1}], [{"n": 2}]]  # given up at once; the next batch goes on
    endpoint.answer(200)
    clock.advance(60)
    assert len(endpoint.calls) == 2
    stats = fwd.stats()
    assert (stats["failed"], stats["retries"], stats["sent"], stats["lastError"]) == (1, 0, 1, f"HTTP {code}")


def test_a_post_without_answer_times_out_and_is_retried(clock, endpoint):
    fwd = forwarder(endpoint, batch_size=1, retries=1, backoff=1.0, timeout=2.0)
    add(fwd, 1)
    clock.advance(2.0)
    assert endpoint.calls[0][2].called  # cancelled: the connection is closed
    clock.advance(1.0)
    assert len(endpoint.calls) == 2
    clock.advance(2.0)
    stats = fwd.stats()
    assert (stats["retries"], stats["failed"], stats["lastError"]) == (1, 1, "no answer within 2 s")


def test_a_full_queue_drops_and_counts(endpoint):
    fwd = forwarder(endpoint, batch_size=1, queue_size=3)
    assert add(fwd, 1, 2, 3, 4) == [True, True, True, False]  # 1 in flight, 2 and 3 waiting
    assert fwd.stats()["dropped"] == 1 and fwd.stats()["queued"] == 3
    endpoint.answer(200)
    assert add(fwd, 5) == [True]
    assert fwd.stats()["dropped"] == 1


def test_close_sends_what_waits_at_once_and_fires_when_delivered(endpoint):
    fwd = forwarder(endpoint, batch_size=2, batch_wait=60.0)
    add(fwd, 1, 2, 3)
    endpoint.answer(200)
    done = fwd.close(5.0)
    assert endpoint.batches()[1] == [{"n": 3}] and not done.called
    endpoint.answer(200)
    assert done.called
    assert add(fwd, 4) == [False]  # closed
    assert (fwd.stats()["sent"], fwd.stats()["dropped"]) == (3, 1)


def test_close_gives_up_after_its_time(clock, endpoint):
    fwd = forwarder(endpoint, batch_size=2, retries=5)
    add(fwd, 1, 2, 3)
    done = fwd.close(5.0)
    clock.advance(4.9)
    assert not done.called
    clock.advance(0.1)
    assert done.called and endpoint.calls[0][2].called  # the hung POST was cancelled
    assert fwd.stats()["dropped"] == 3 and fwd.stats()["queued"] == 0
    clock.advance(60)
    assert len(endpoint.calls) == 1 and fwd.stats()["failed"] == 0


def test_close_stops_a_backoff_wait_too(clock, endpoint):
    fwd = forwarder(endpoint, batch_size=1, retries=5, backoff=10.0)
    add(fwd, 1)
    endpoint.answer(503)
    done = fwd.close(1.0)
    clock.advance(1.0)
    assert done.called and fwd.stats()["dropped"] == 1
    clock.advance(60)
    assert len(endpoint.calls) == 1 and fwd.stats()["retries"] == 0


def test_close_with_nothing_held_or_no_time(endpoint):
    assert forwarder(endpoint).close(5.0).called
    fwd = forwarder(endpoint, batch_wait=60.0)
    add(fwd, 1, 2)
    assert fwd.close(0).called and fwd.stats()["dropped"] == 2 and endpoint.calls == []


def test_events_json():
    device = Device(id="id-1", name="d1")
    entries = [(5, "t", 21.5), (5, "on", True), (6, "t", 22), (5, "cfg", Json('{"a":[1,2]}')), (6, "s", "x")]
    assert telemetry_event(device, entries) == {
        "type": "telemetry", "deviceId": "id-1", "deviceName": "d1",
        "entries": [{"ts": 5, "values": {"t": 21.5, "on": True, "cfg": {"a": [1, 2]}}},
                    {"ts": 6, "values": {"t": 22, "s": "x"}}]}
    assert attributes_event(device, {"fw": "1.0", "j": Json("[1]")}, ts=7) == {
        "type": "attributes", "deviceId": "id-1", "deviceName": "d1", "ts": 7, "values": {"fw": "1.0", "j": [1]}}
    body = batch_body([encode({"a": "é"}), encode({"b": 1})])
    assert json.loads(body) == [{"a": "é"}, {"b": 1}]
