"""The servers the benchmarks compare, each started as its own process on loopback:

- `rayformers`: `rayformers serve --checkpoint DIR` with its defaults;
- `naive`: what a user writes from the Hugging Face course and FastAPI's docs: `transformers.pipeline` in
  a minimal FastAPI app under uvicorn, one request per pipeline call (a plain `def` route, which FastAPI
  runs in its thread pool);
- `serve`: a plain Ray Serve deployment of the same pipeline, without batching.

Run one by hand: `python -m benchmarks.servers naive --task text-classification --model DIR --port 8100`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PIPELINE_TASKS = {
    "classifier": "text-classification",
    "embedder": "feature-extraction",
    "causal_lm": "text-generation",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    kind: str
    base: str
    pid: int
    routes: dict[str, str]


def _predict_route(pipe: Any, task: str) -> Any:
    import numpy as np

    def answer(inputs: Any) -> Any:
        out = pipe(inputs)
        if task == "feature-extraction":  # one vector per text, the mean of its token vectors
            return [
                np.asarray(v)[0].mean(axis=0).tolist() for v in (out if isinstance(inputs, list) else [out])
            ]
        return out

    return answer


def naive_app(task: str, model: str) -> Any:
    """The minimal FastAPI app: /predict, and for generation an OpenAI-style /v1/completions."""
    import threading

    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from transformers import TextIteratorStreamer, pipeline

    pipe = pipeline(task, model=model, device="cpu")
    answer = _predict_route(pipe, task)
    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict) -> Any:
        return answer(body["inputs"])

    @app.post("/v1/completions")
    def completions(body: dict) -> Any:
        prompt, max_tokens = body["prompt"], int(body.get("max_tokens", 16))
        if not body.get("stream"):
            out = pipe(prompt, max_new_tokens=max_tokens, do_sample=False, return_full_text=False)
            return {"choices": [{"text": out[0]["generated_text"]}]}
        streamer = TextIteratorStreamer(pipe.tokenizer, skip_prompt=True, skip_special_tokens=True)
        inputs = pipe.tokenizer(prompt, return_tensors="pt")
        kwargs = {**inputs, "max_new_tokens": max_tokens, "do_sample": False, "streamer": streamer}
        threading.Thread(target=pipe.model.generate, kwargs=kwargs, daemon=True).start()

        def events() -> Iterator[str]:
            for text in streamer:
                yield f"data: {json.dumps({'choices': [{'text': text}]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_deployment(task: str, model: str) -> Any:
    """The plain Ray Serve deployment: the pipeline in a replica, one request per call, no batching."""
    from ray import serve
    from starlette.requests import Request

    @serve.deployment
    class Pipeline:
        def __init__(self) -> None:
            from transformers import pipeline

            self.answer = _predict_route(pipeline(task, model=model, device="cpu"), task)

        async def __call__(self, request: Request) -> Any:
            body = await request.json()
            return self.answer(body["inputs"])

    return Pipeline.bind()


def _run_naive(task: str, model: str, port: int) -> None:
    import uvicorn

    uvicorn.run(naive_app(task, model), host="127.0.0.1", port=port, log_level="warning")


def _run_serve(task: str, model: str, port: int) -> None:
    import ray
    from ray import serve

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(serve_deployment(task, model), name="pipeline", route_prefix="/predict")
    print("ready", flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    serve.shutdown()
    ray.shutdown()


def _wait(
    url: str, body: dict[str, Any] | None, process: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    data = json.dumps(body).encode() if body is not None else None
    while True:
        try:
            request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=30):
                return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{url}: the server exited:\n{log.read_text()[-3000:]}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{url}: no answer in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}"
                ) from None
            time.sleep(0.5)


@contextlib.contextmanager
def start(
    kind: str, model_name: str, model_dir: Path, log_dir: Path, probe: dict[str, Any]
) -> Iterator[Server]:
    """Start a `kind` server of `model_dir`; yield once `probe` is answered on its /predict route."""
    task = PIPELINE_TASKS[model_name]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_DATA_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    if kind == "rayformers":
        args = [str(Path(sys.executable).with_name("rayformers")), "serve", "--checkpoint", str(model_dir),
                "--name", "model", "--port", str(port)]  # fmt: skip
        routes = {"predict": "/model/predict", "completions": "/v1/completions"}
    else:
        args = [
            sys.executable,
            "-m",
            "benchmarks.servers",
            kind,
            "--task",
            task,
            "--model",
            str(model_dir),
            "--port",
            str(port),
        ]
        routes = {"predict": "/predict", "completions": "/v1/completions"}
    log = log_dir / f"{kind}-{model_name}.log"
    process = subprocess.Popen(
        args, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base + routes["predict"], probe, process, log, timeout_s=300)
        yield Server(kind, base, process.pid, routes)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=["naive", "serve"])
    parser.add_argument("--task", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    (_run_naive if args.kind == "naive" else _run_serve)(args.task, args.model, args.port)


if __name__ == "__main__":
    main()
