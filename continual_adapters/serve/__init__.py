"""Layer 10, `cadapt serve`: every ready task of a registry over HTTP from one process.

One frozen encoder holds every served task's modules; requests that arrive close together are
merged into one mixed-task batch (`ContinualModel.forward_mixed`), so the encoder's weights are
read once for rows of many tasks. The pieces, each small:

- config.py: the server's settings (`ServeConfig`), one place for every limit;
- state.py: the tasks loaded from the registry (sha256-checked), reloaded when it changes, and the
  immutable snapshot (`ServingState`) requests are checked against;
- inference.py: rows to answers, each task run at its recorded `max_length` and precision;
- batcher.py: the one worker thread that owns the model, its bounded queue and the merging;
- protocol.py: the JSON request and answer, and the stable error codes;
- metrics.py: Prometheus text; dashboard.py: the read-only HTML page at `/`;
- app.py: the FastAPI routes (FastAPI and uvicorn are the optional extra `serve`, imported only
  by app.py, which only `cadapt serve` and the tests import).

Nothing here writes to the registry.
"""
