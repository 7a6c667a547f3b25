"""Development tooling kept out of the core (api/, worker/, shared/ never import it).

- ``devtools.processes``: the one definition of how each process is launched (API server class, worker
  pool and concurrency, beat, the scripted model), from which the Procfile, docker-compose.yml, the
  Dockerfile, the test/bench stack and ``make run`` are derived or checked.
- ``devtools.stack``: the real stack for tests, the benchmark and scripts.
- ``devtools.run``: ``make run``'s supervisor (restarts a dead process, says what died and why).
- ``devtools.services``: the PostgreSQL and Redis that ``make test`` uses, brought from PyPI into ``var/``
  when the machine has none.
"""
