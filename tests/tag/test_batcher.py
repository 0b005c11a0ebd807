"""tag/batcher.py: concurrent requests share model calls, each gets its own answers, a full queue refuses at once,
closing answers what was taken, and a failing request fails alone."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tag.batcher import Batcher, QueueFull


class Spy:
    """A model that answers each item by its own function of it and records every call; `gate`, while clear, holds
    each call in the worker thread (`entered` says one is there)."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[str]) -> list[str]:
        assert threading.current_thread() is not threading.main_thread(), "the model ran on the event loop"
        self.calls.append(list(items))
        self.entered.set()
        self.gate.wait()
        if self.fail_on in items:
            raise ValueError(f"cannot tag {self.fail_on!r}")
        return [item.upper() + "!" for item in items]


def batcher(spy: Spy, budget: int = 1000, max_wait: float = 0.05, max_queue: int = 1000) -> Batcher:
    return Batcher(spy, len, budget, max_wait, max_queue)


async def wait_for(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.001)


def test_concurrent_requests_share_calls_and_each_gets_its_own_answers():
    async def main():
        spy = Spy()
        b = batcher(spy, budget=60)
        b.start()
        requests = [[f"r{r}t{t}" for t in range(1 + r % 3)] for r in range(40)]
        answers = await asyncio.gather(*(b.submit(items) for items in requests))
        await b.close()
        return spy, requests, answers

    spy, requests, answers = asyncio.run(main())
    assert answers == [[item.upper() + "!" for item in items] for items in requests]
    assert len(spy.calls) < len(requests) / 4, spy.calls
    assert sorted(item for call in spy.calls for item in call) == sorted(i for items in requests for i in items)
    # A call takes whole requests within the budget (each item costs its length here).
    assert all(sum(map(len, call)) <= 60 for call in spy.calls)


def test_a_request_over_the_budget_runs_alone():
    async def main():
        spy = Spy()
        b = batcher(spy, budget=5)
        b.start()
        answers = await asyncio.gather(b.submit(["a"]), b.submit(["longer than five"]), b.submit(["b"]))
        await b.close()
        return spy, answers

    spy, answers = asyncio.run(main())
    assert answers == [["A!"], ["LONGER THAN FIVE!"], ["B!"]]
    assert ["longer than five"] in spy.calls


def test_a_full_queue_refuses_at_once_and_frees_up():
    async def main():
        spy = Spy()
        spy.gate.clear()
        b = batcher(spy, max_wait=0.001, max_queue=3)
        b.start()
        first = asyncio.ensure_future(b.submit(["a", "b", "c"]))
        await wait_for(spy.entered)  # taken from the queue into a call that is held
        queued = asyncio.ensure_future(b.submit(["d", "e"]))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match="2 texts waiting, at most 3"):
            await b.submit(["f", "g"])  # raises without waiting for the held call
        spy.gate.set()
        answers = [await first, await queued, await b.submit(["f", "g"])]
        await b.close()
        return answers

    assert asyncio.run(main()) == [["A!", "B!", "C!"], ["D!", "E!"], ["F!", "G!"]]


def test_close_answers_every_request_taken_then_refuses():
    async def main():
        spy = Spy()
        spy.gate.clear()
        b = batcher(spy, budget=2, max_wait=10.0)  # a long wait: closing must not wait for it
        b.start()
        pending = [asyncio.ensure_future(b.submit([f"t{i}"])) for i in range(7)]
        await wait_for(spy.entered)
        closed = asyncio.ensure_future(b.close())
        await asyncio.sleep(0.01)
        assert not closed.done()
        with pytest.raises(QueueFull, match="shutting down"):
            await b.submit(["late"])
        spy.gate.set()
        await closed
        return [p.result() for p in pending], b.worker

    answers, worker = asyncio.run(main())
    assert answers == [[f"T{i}!"] for i in range(7)]
    with pytest.raises(RuntimeError):
        worker.submit(print)  # the worker thread is shut down


def test_a_failing_request_fails_alone():
    async def main():
        spy = Spy(fail_on="bad")
        b = batcher(spy)
        b.start()
        answers = await asyncio.gather(b.submit(["x"]), b.submit(["y", "bad"]), b.submit(["z"]),
                                       return_exceptions=True)
        await b.close()
        return spy, answers

    spy, answers = asyncio.run(main())
    assert answers[0] == ["X!"] and answers[2] == ["Z!"]
    assert isinstance(answers[1], ValueError) and "cannot tag 'bad'" in str(answers[1])
    assert spy.calls[0] == ["x", "y", "bad", "z"]  # tried together first, then each request alone


def test_a_request_whose_caller_left_is_not_tagged():
    async def main():
        spy = Spy()
        spy.gate.clear()
        b = batcher(spy, max_wait=0.001)
        b.start()
        first = asyncio.ensure_future(b.submit(["a"]))
        await wait_for(spy.entered)
        gone = asyncio.ensure_future(b.submit(["gone"]))
        kept = asyncio.ensure_future(b.submit(["kept"]))
        await asyncio.sleep(0.01)
        gone.cancel()
        spy.gate.set()
        answers = await asyncio.gather(first, kept)
        await b.close()
        return spy, answers

    spy, answers = asyncio.run(main())
    assert answers == [["A!"], ["KEPT!"]] and spy.calls == [["a"], ["kept"]]
