"""The serving bench's floor: the service's own HTTP stack (FastAPI on uvicorn, orjson, the
same no-delay protocol) answering a constant prediction to the same `POST /invocations`,
reading the body and nothing else. Whatever `reprokit serve` costs above this is ours.

Run by bench/serving.py: `python bench/floor_app.py --port PORT --workers N`.
"""

from __future__ import annotations

from starlette.requests import Request  # resolved by FastAPI at run time: module level

ANSWER = {"predictions": [{"probability": 0.5, "label": "No", "model_version": "floor", "warnings": []}]}


def create_app():
    import orjson
    from fastapi import FastAPI
    from fastapi.responses import Response

    app = FastAPI()
    body = orjson.dumps(ANSWER)

    @app.post("/invocations")
    async def invocations(request: Request):
        await request.body()
        return Response(body, media_type="application/json")

    @app.get("/health/ready")
    async def ready():
        return Response(b'{"status":"ready"}', media_type="application/json")

    return app


def main() -> None:
    import argparse

    import uvicorn

    from reprokit.serving.serve import NoDelayH11Protocol

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        "floor_app:create_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        http=NoDelayH11Protocol,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
