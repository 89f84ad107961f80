"""Running the server: one process, or a supervisor with several workers sharing one socket.

uvicorn's supervisor keeps its copy of the listening socket open until every worker has drained
and exited. Meanwhile the kernel goes on accepting connections that no process will ever read, so a
client (or a load balancer's health check) waits for an answer that never comes. Ours closes its copy
as soon as it asks the workers to stop; each worker closes its own when it stops accepting, so the
port is refused at once and a load balancer moves on, while requests already read are drained.
"""

from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess


class _Supervisor(Multiprocess):
    def terminate_all(self) -> None:
        super().terminate_all()
        for sock in self.sockets:
            sock.close()


def run(app: str, *, workers: int, **options: Any) -> None:
    """Serve the `app` factory's import string with `workers` processes; returns after a clean stop."""
    # uvicorn kills a worker that has not answered its health check within 5 s, which a worker still
    # importing its modules on a busy machine can miss (seen under load: killed before it served).
    config = uvicorn.Config(app, factory=True, workers=workers, timeout_worker_healthcheck=30, **options)
    if workers > 1:
        _Supervisor(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's own code for a server that failed to start
