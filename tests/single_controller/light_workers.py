"""Torch-free workers: their Ray actors start fast (no torch import), for the colocation tests."""

from __future__ import annotations

import os

from verl.single_controller import Dispatch, Worker, register


class CounterWorker(Worker):
    """Keeps a counter per rank."""

    def __init__(self, start: int = 0):
        super().__init__()
        self.count = start

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def describe(self) -> dict:
        return {"rank": self.rank, "pid": os.getpid(), "count": self.count}

    @register(dispatch_mode=Dispatch.ALL_TO_ALL)
    def increment(self, amount: int) -> int:
        self.count += amount
        return self.count


class EchoWorker(Worker):
    """A second role: answers with its rank and a constructor argument."""

    def __init__(self, greeting: str):
        super().__init__()
        self.greeting = greeting

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def describe(self) -> dict:
        return {"rank": self.rank, "pid": os.getpid(), "greeting": self.greeting}

    @register(dispatch_mode=Dispatch.RANK_ZERO)
    def whoami(self) -> int:
        return self.rank

    @register(dispatch_mode=Dispatch.ONE_TO_ALL, blocking=False)
    def greet(self, name: str) -> str:
        return f"{self.greeting} {name} from rank {self.rank}"
