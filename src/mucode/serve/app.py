"""The HTTP layer of `mucode serve` (FastAPI on uvicorn): request schemas, limits, the endpoints.
Everything that runs code goes through the one sandbox (`mucode.execution.Executor`); everything
that generates goes through the `Solver`, which batches concurrent requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, model_validator
from starlette.concurrency import run_in_threadpool

from mucode.engine import SELECTORS, VERIFIER_SELECTORS
from mucode.execution.limits import Limits
from mucode.serve.config import ServeConfig
from mucode.serve.solver import SolveOptions, Solver, problem_id, record_summary
from mucode.types import AssertTest, IOTest, Problem


TESTS_BLOCK = re.compile(r"```tests\n(?P<body>.*?)```", re.S)


# -- request schemas -------------------------------------------------------------------------------


class IOCase(BaseModel):
    input: str = ""
    output: str


TestSpec = Union[str, IOCase]


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class SearchOptions(BaseModel):
    turns: int | None = Field(default=None, ge=1)
    selector: str | None = None
    seed: int = 0


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    n: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    tests: list[TestSpec] | None = None  # extra field: the public tests
    private_tests: list[TestSpec] | None = None  # extra field: hidden tests, judged but never shown to the model
    mucode: SearchOptions = Field(default_factory=SearchOptions)


class ExecuteItem(BaseModel):
    program: str
    tests: list[TestSpec] = Field(min_length=1)
    setup_code: str = ""


class ExecuteRequest(BaseModel):
    program: str | None = None
    tests: list[TestSpec] | None = None
    setup_code: str = ""
    batch: list[ExecuteItem] | None = None


class ScorePair(BaseModel):
    """A program for a problem (`problem`, `program`), or a conversation state and the reply to
    score (`messages`, `reply`: what a remote `mucode search --verifier URL` sends)."""

    problem: str | None = None
    program: str | None = None
    messages: list[Message] | None = Field(default=None, min_length=1)
    reply: str | None = None

    @model_validator(mode="after")
    def one_form(self) -> ScorePair:
        if (self.problem is None) != (self.program is None) or (self.messages is None) != (self.reply is None):
            raise ValueError("give problem and program, or messages and reply")
        if (self.problem is None) == (self.messages is None):
            raise ValueError("give either problem and program, or messages and reply, not both")
        return self

    def prompt_and_reply(self) -> tuple[Any, str]:
        if self.messages is not None:
            return [m.model_dump() for m in self.messages], self.reply
        return self.problem, f"```python\n{self.program}\n```"


class ScoreRequest(BaseModel):
    pairs: list[ScorePair] = Field(min_length=1)


# -- helpers ---------------------------------------------------------------------------------------


def bad_request(message: str, status: int = 400) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def to_tests(specs: list[TestSpec], limit: int, where: str) -> list[Any]:
    if len(specs) > limit:
        raise bad_request(f"{where}: {len(specs)} tests; the limit is {limit}", 413)
    tests = []
    for spec in specs:
        if isinstance(spec, str):
            try:
                compile(spec, "<test>", "exec", dont_inherit=True)
            except SyntaxError as err:
                raise bad_request(f"{where}: test {spec[:80]!r} is not valid Python ({err.msg})") from None
            tests.append(AssertTest(spec))
        else:
            tests.append(IOTest(spec.input, spec.output))
    return tests


def tests_from_message(content: str) -> tuple[str, list[str]]:
    """The statement without its ```tests block, and the block's top-level statements split into
    one test per `assert` (other statements, e.g. imports, go with every test)."""
    from mucode.execution.asserts import split_assert_file

    match = TESTS_BLOCK.search(content)
    if match is None:
        return content, []
    try:
        asserts = split_assert_file(match["body"])
    except SyntaxError as err:
        raise bad_request(f"the ```tests block is not valid Python ({err.msg}, line {err.lineno})") from None
    return (content[: match.start()] + content[match.end() :]).strip(), asserts


def turn_event(number: int, turn: Any) -> dict[str, Any]:
    return {"turn": number, **turn.to_dict()}


def openai_error(status: int, message: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


# -- the app ---------------------------------------------------------------------------------------


@dataclass
class Services:
    """What the endpoints use; built once at start by `load_services` (or by a test)."""

    solver: Solver | None
    executor: Any
    scorer: Any = None
    model_name: str = "mucode"
    execute_lock: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(64))


def load_services(config: ServeConfig) -> Services:
    """Load the generator, the verifier and the sandbox pool of `config`."""
    from mucode.execution import Executor
    from mucode.generation.factory import make_generator
    from mucode.search import SearchConfig, generator_options

    executor = Executor(workers=config.workers, limits=Limits(timeout_s=config.timeout_s))
    scorer = None
    if config.verifier:
        from mucode.verifier.scoring import VerifierScorer

        scorer = VerifierScorer.load(config.verifier)
    search_config = SearchConfig(
        model=config.model,
        backend=config.backend,
        base_url=config.base_url,
        dtype=config.dtype,
        max_live=config.max_batch,
        n=1,
        temperature=0.0,
        out="",
    )
    generator = make_generator(config.backend, config.model, **generator_options(search_config))
    solver = Solver(generator, executor, scorer, max_batch=config.max_batch, batch_window_s=config.batch_window_s)
    return Services(solver, executor, scorer, model_name=config.model)


def create_app(config: ServeConfig, services: Services | None = None) -> FastAPI:
    """The FastAPI app; `services` default to `load_services(config)` at start-up."""
    state: dict[str, Services] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state["services"] = loaded = services or load_services(config)
        yield
        if services is None:  # what this app loaded, it closes
            if loaded.solver is not None:
                loaded.solver.close()
                loaded.solver.generator.close()
            loaded.executor.close()

    app = FastAPI(title="mucode serve", version="1", lifespan=lifespan)

    @app.middleware("http")
    async def limits_and_auth(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
            return openai_error(413, f"request body of {length} bytes; the limit is {config.max_body_bytes}")
        if config.api_key and request.url.path != "/health":
            if request.headers.get("authorization") != f"Bearer {config.api_key}":
                return openai_error(401, "missing or wrong API key: send Authorization: Bearer KEY")
        return await call_next(request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return openai_error(err.status_code, str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return openai_error(400, f"{where or 'body'}: {first.get('msg')}")

    @app.get("/health")
    def health() -> dict[str, Any]:
        loaded = state["services"]
        batches = loaded.solver.batches if loaded.solver is not None else []
        return {
            "status": "ok",
            "model": loaded.model_name,
            "verifier": config.verifier,
            "sandbox": getattr(loaded.executor, "mode", None),
            "solve_batches": len(batches),
            "largest_batch": max(batches, default=0),
        }

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": state["services"].model_name, "object": "model", "owned_by": "mucode"}],
        }

    @app.post("/v1/execute")
    async def execute(body: ExecuteRequest) -> Any:
        items = body.batch if body.batch is not None else None
        if items is None:
            if body.program is None or not body.tests:
                raise bad_request("give `program` and `tests`, or `batch`: a list of {program, tests}")
            items = [ExecuteItem(program=body.program, tests=body.tests, setup_code=body.setup_code)]
        if len(items) > config.max_programs:
            raise bad_request(f"{len(items)} programs; the limit is {config.max_programs}", 413)
        jobs = [
            (item.program, to_tests(item.tests, config.max_tests, f"batch[{i}]"), item.setup_code)
            for i, item in enumerate(items)
        ]
        executor = state["services"].executor
        results = await asyncio.gather(*(run_in_threadpool(executor.run, *job) for job in jobs))
        answers = [
            {
                **result.to_dict(),
                "tests": [
                    t.code if isinstance(t, AssertTest) else {"input": t.stdin, "output": t.expected_stdout}
                    for t in job[1]
                ],
            }
            for result, job in zip(results, jobs)
        ]
        return {"results": answers} if body.batch is not None else answers[0]

    @app.post("/v1/score")
    async def score(body: ScoreRequest) -> dict[str, Any]:
        scorer = state["services"].scorer
        if scorer is None:
            raise bad_request("this server has no verifier; start it with --verifier DIR", 409)
        if len(body.pairs) > config.max_programs:
            raise bad_request(f"{len(body.pairs)} pairs; the limit is {config.max_programs}", 413)
        prompts, replies = zip(*(pair.prompt_and_reply() for pair in body.pairs))
        scores = await run_in_threadpool(scorer.score, list(prompts), list(replies))
        return {"scores": scores}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> Any:
        loaded = state["services"]
        if loaded.solver is None:
            raise bad_request("this server has no generator", 409)
        problem, options = _solve_request(body, config, loaded)
        if body.stream:
            return StreamingResponse(
                _stream(loaded.solver, problem, options, loaded.model_name), media_type="text/event-stream"
            )
        record = await asyncio.wrap_future(loaded.solver.submit(problem, options))
        return _completion(record, loaded.model_name)

    return app


def _solve_request(body: ChatRequest, config: ServeConfig, loaded: Services) -> tuple[Problem, SolveOptions]:
    users = [m for m in body.messages if m.role == "user"]
    if not users:
        raise bad_request("messages: no user message; the last user message is the problem")
    statement, block_tests = tests_from_message(users[-1].content)
    specs = body.tests if body.tests is not None else block_tests
    if not specs:
        raise bad_request(
            "no tests: give `tests` (a list of assert statements or {input, output} cases) or a ```tests block in the message"
        )
    public = to_tests(list(specs), config.max_tests, "tests")
    private = to_tests(list(body.private_tests or []), config.max_tests, "private_tests")
    n = body.n or config.n
    turns = body.mucode.turns or config.turns
    if n * turns > config.max_n_turns:
        raise bad_request(f"n x turns = {n} x {turns}; the limit is {config.max_n_turns}", 413)
    selector = body.mucode.selector or config.selector or ("pt+lv" if loaded.scorer is not None else "pt")
    if selector not in SELECTORS:
        raise bad_request(f"mucode.selector: {selector!r}; choose one of {', '.join(SELECTORS)}")
    if selector in VERIFIER_SELECTORS and loaded.scorer is None:
        raise bad_request(f"mucode.selector {selector!r} needs a verifier; this server has none (use pt)")
    temperature = body.temperature if body.temperature is not None else (0.0 if n == 1 else config.temperature)
    if temperature == 0 and n > 1:
        raise bad_request(f"n={n} with temperature=0: greedy decoding gives one program; use n=1 or a temperature > 0")
    tests_key = [t.code if isinstance(t, AssertTest) else (t.stdin, t.expected_stdout) for t in public]
    problem = Problem(
        id=problem_id(statement, tests_key),
        source="serve",
        prompt=statement,
        public_tests=tuple(public),
        private_tests=tuple(private),
    )
    options = SolveOptions(
        n=n,
        turns=turns,
        selector=selector,
        temperature=temperature,
        top_p=body.top_p,
        max_new_tokens=body.max_tokens or config.max_new_tokens,
        seed=body.mucode.seed,
    )
    return problem, options


def _completion(record: Any, model: str) -> dict[str, Any]:
    program = record.turns[-1].chosen.program
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": program},
                "finish_reason": "stop" if record.solved_public else "length",
            }
        ],
        "usage": {
            "prompt_tokens": 0,
            "completion_tokens": record.completion_tokens,
            "total_tokens": record.completion_tokens,
        },
        "mucode": record_summary(record),
    }


async def _stream(solver: Solver, problem: Problem, options: SolveOptions, model: str):
    """Server-sent events: one chunk per decided turn (its candidates and verdicts in `mucode`),
    then the final program as the content delta, then [DONE]."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    future = solver.submit(
        problem, options, on_turn=lambda n, t: loop.call_soon_threadsafe(events.put_nowait, turn_event(n, t))
    )
    future.add_done_callback(lambda f: loop.call_soon_threadsafe(events.put_nowait, None))
    stream_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None, extra: dict[str, Any]) -> str:
        data = {
            "id": stream_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            "mucode": extra,
        }
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    while (event := await events.get()) is not None:
        yield chunk({"role": "assistant"} if event["turn"] == 1 else {}, None, event)
    try:
        record = future.result()
    except Exception as err:  # noqa: BLE001
        yield f"data: {json.dumps({'error': {'message': str(err), 'type': 'server_error'}})}\n\n"
        return
    summary = record_summary(record)
    yield chunk({"content": record.turns[-1].chosen.program}, "stop" if record.solved_public else "length", summary)
    yield "data: [DONE]\n\n"
