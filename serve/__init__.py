"""serve: ERNIE-VL behind an OpenAI-compatible chat API on Ray Serve.

    ernie-vl serve [--model DIR] [--host 127.0.0.1] [--port 8000] [--replicas N]   # local
    serve run serve/config.yaml                                                    # a Ray cluster

Files, one concept each: settings.py (all knobs), schemas.py (OpenAI request/response models), errors.py (OpenAI
error shapes), security.py (API key, body cap, media roots, URL allow-list), media.py (safe media loading and header
checks), prepare.py (request -> processor -> ModelInputs + settings), textstream.py (incremental detokenization, stop
strings), batching.py (bounded queue, token and wait budgets),
runtime.py (the model side of a replica), sharded.py (a replica whose model is an expert-sharded gang of rank actors,
`expert_shards` > 1), app.py (HTTP routes, the Serve deployment, `build_app`), cli.py
(`ernie-vl serve`), bench.py (load benchmark). Imports ray.serve, fastapi/pydantic and ernie_vl; never pipelines.
"""
