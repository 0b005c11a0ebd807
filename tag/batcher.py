"""The queue between a server's requests and its one model: the items of concurrent requests tagged in one call.

A request's items wait in a queue. Once the first one waits, the batcher gathers more until their estimated cost
reaches the budget or `max_wait` seconds have passed since it arrived, then hands every item it took to `call` in
one worker thread, off the event loop, and slices the answers back to the requests they came from, in order: each
request holds its own future, so no request can get another's answers. While the model runs, the next batch
gathers; under load it is full, or has waited long enough, by the time the model is free.

A full queue refuses a request at once (QueueFull) rather than letting it wait without bound. `close()` stops taking
requests and answers every one taken before it returns. If a call fails, each of its requests is tried alone, so a
bad request fails by itself and the others are still answered.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class QueueFull(Exception):
    """The queue holds as many items as it may, or the batcher is closing: try again later."""


@dataclass(eq=False)
class Request(Generic[Item, Answer]):
    items: list[Item]
    cost: int
    arrived: float  # event-loop time
    answer: asyncio.Future[list[Answer]]


class Batcher(Generic[Item, Answer]):
    """Gathers the items of concurrent `submit` calls into calls of `call`, one at a time, in one worker thread.

    `call(items)` answers each item, in order; `cost(item)` estimates its share of `budget`; a batch takes whole
    requests, at least one, so a request over the budget runs alone. `max_queue` bounds the items waiting."""

    def __init__(self, call: Callable[[list[Item]], list[Answer]], cost: Callable[[Item], int], budget: int,
                 max_wait: float, max_queue: int):
        self.call, self.cost, self.budget, self.max_wait, self.max_queue = call, cost, budget, max_wait, max_queue
        self.waiting: deque[Request[Item, Answer]] = deque()
        self.waiting_items = 0
        self.waiting_cost = 0
        self.arrived = asyncio.Event()
        self.closing = False
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tagger")
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start gathering, on the running event loop."""
        self.task = asyncio.get_running_loop().create_task(self.serve())

    async def submit(self, items: Sequence[Item]) -> list[Answer]:
        """The answers to `items`, in order, once a call has tagged them. Raises QueueFull at once if they do not fit
        in the queue or the batcher is closing."""
        if self.closing:
            raise QueueFull("the server is shutting down")
        if self.waiting_items + len(items) > self.max_queue:
            raise QueueFull(f"the queue is full ({self.waiting_items} texts waiting, at most {self.max_queue})")
        loop = asyncio.get_running_loop()
        request = Request(list(items), sum(map(self.cost, items)), loop.time(), loop.create_future())
        self.waiting.append(request)
        self.waiting_items += len(request.items)
        self.waiting_cost += request.cost
        self.arrived.set()
        return await request.answer

    async def close(self) -> None:
        """Refuse new requests, answer every one taken, then stop the worker thread."""
        self.closing = True
        self.arrived.set()
        if self.task is not None:
            await self.task
        self.worker.shutdown(wait=True)

    async def serve(self) -> None:
        while self.waiting or not self.closing:
            if not self.waiting:
                self.arrived.clear()
                await self.arrived.wait()
                continue
            await self.gather()
            if batch := self.take():
                await self.run(batch)

    async def gather(self) -> None:
        """Wait until the items waiting fill the budget, the first has waited `max_wait`, or the batcher closes."""
        loop = asyncio.get_running_loop()
        deadline = self.waiting[0].arrived + self.max_wait
        while self.waiting_cost < self.budget and not self.closing and (left := deadline - loop.time()) > 0:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                return

    def take(self) -> list[Request[Item, Answer]]:
        """Whole requests from the front of the queue within the budget (at least one); those whose caller has gone
        are dropped untagged."""
        batch: list[Request[Item, Answer]] = []
        cost = 0
        while self.waiting and (not batch or cost + self.waiting[0].cost <= self.budget):
            request = self.waiting.popleft()
            self.waiting_items -= len(request.items)
            self.waiting_cost -= request.cost
            if not request.answer.done():
                batch.append(request)
                cost += request.cost
        return batch

    async def run(self, batch: list[Request[Item, Answer]]) -> None:
        """One call for the items of `batch`, each request answered with its own slice of the answers."""
        items = [item for request in batch for item in request.items]
        try:
            answers = await asyncio.get_running_loop().run_in_executor(self.worker, self.call, items)
            if len(answers) != len(items):
                raise RuntimeError(f"{len(answers)} answers to {len(items)} items")
        except Exception as error:
            if len(batch) > 1:
                for request in batch:
                    await self.run([request])
            elif not batch[0].answer.done():
                batch[0].answer.set_exception(error)
            return
        start = 0
        for request in batch:
            if not request.answer.done():  # its caller may have gone meanwhile
                request.answer.set_result(answers[start:start + len(request.items)])
            start += len(request.items)
