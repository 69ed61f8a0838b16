"""Several real tir-agent servers (tests/servers.py) behind one real nginx, started in parallel."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tests.scaleout.nginxproc import NginxProcess, start_nginx
from tests.servers import start_server


@dataclass
class Cluster:
    """``nginx.url`` is the single URL clients use; ``servers`` are the processes behind it."""

    servers: list[Any]
    nginx: NginxProcess

    @property
    def url(self) -> str:
        return self.nginx.url


@contextlib.contextmanager
def start_servers(count: int, *args: str) -> Iterator[list[Any]]:
    """``count`` servers started at the same time (each imports the math stack on its own)."""
    managers = [start_server(*args) for _ in range(count)]
    entered: list[Any] = []
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(m.__enter__) for m in managers]
            errors = []
            for manager, future in zip(managers, futures, strict=True):
                try:
                    entered.append(future.result())
                except BaseException as e:
                    errors.append(e)
                    continue
                stack.push(manager.__exit__)
        if errors:
            raise errors[0]
        yield entered


@contextlib.contextmanager
def start_cluster(count: int, *server_args: str, **nginx_options: Any) -> Iterator[Cluster]:
    """``count`` servers (``server_args`` each) behind one nginx; everything stopped on exit."""
    with (
        start_servers(count, *server_args) as servers,
        start_nginx([s.url for s in servers], **nginx_options) as nginx,
    ):
        yield Cluster(servers, nginx)
