"""The workbench: a local web app over one SAE run.

    python -m apps.serve --workdir=RUN [--host=127.0.0.1] [--port=8000]   (apps/serve.py)

Pages (server-rendered from the report's Jinja2 templates; plain JavaScript from
``apps/workbench/static/``, nothing fetched from the network):

- ``/``: the interpretable features (the 1-30% window) best explained first, or all
  (``?scope=all``); search over ids, explanations, labels, tokens and concepts (exact
  matches of a name first), a frequency window, sorting by explanation F1, score,
  frequency or id, pages;
- ``/feature/{id}``: the static report's feature card for any feature, examples from each
  band of its activations, the features that fire together with it, a label form;
- ``/lab``: the build lab: a weapon and abilities in, the model's legal completion,
  token probabilities and active features out; features set to values, with a slot diff.
  ``/lab?weapon=GID&abilities=name:AP,...&feature=F&value=V`` opens it with that build
  (every example build links there); ``/lab?feature=F`` alone opens the mains of F's
  strongest build with F set (:meth:`Workbench.set_link`).

Build-lab completions that arrive together are completed together
(:mod:`apps.workbench.completion_batcher`): a request waits up to ``batch_window_ms`` (a few
milliseconds; ``apps.serve --batch_window_ms``) for others, and up to
:data:`apps.workbench.lab.MAX_BATCH` go in one batched call; 0 completes each alone, one at
a time.

Started with ``warm=True`` (``apps.serve``), the server answers at once but compiles and
loads in a background thread first (:mod:`apps.workbench.warmup`): until then the
feature and lab pages are a "loading" page that reloads itself and their API answers 503
``{"status": "loading"}``; ``GET /api/status`` says ``loading`` or ``ready`` (and, once lab
requests were batched, ``completion_batches``: how many batches held how many requests).

A run trained on activation files (``--activations``) has no primary model: its pages show
what applies without one (:class:`apps.workbench.run_state.ActivationRunData`), and the
build lab and rung curves answer 404 saying so.

JSON API (also for scripts): ``GET /api/status``, ``GET /api/run``, ``GET
/api/features?q=&sort=&offset=&limit=&fmin=&fmax=&scope=&arch=`` (no parameters: what
the list page opens on), ``GET /api/features/{id}``, ``POST``/``DELETE
/api/features/{id}/label`` (``{"name", "category", "notes"}``), ``GET /api/lab``,
``POST /api/complete`` (``{"weapon", "abilities": {name: AP}, "edits": [{"feature",
"value"}]}``). A bad request gets a 4xx whose ``error`` names the bad field.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from apps.analysis.report import TEMPLATES, feature_view, template_environment
from apps.workbench.completion_batcher import DEFAULT_WINDOW_MS, CompletionBatcher
from apps.workbench.feature_list import (
    DEFAULT_SCOPE,
    DEFAULT_SORT,
    MAX_LIMIT,
    PAGE_SIZE,
    SCOPES,
    SORTS,
    FeatureQuery,
    FeatureTable,
)
from apps.workbench.lab import (
    LabRequestError,
    complete_lab,
    feature_activation,
    lab_choices,
    lab_request,
    lab_url,
)
from apps.workbench.run_state import RunData, open_run
from apps.workbench.warmup import warm_up
from sae_jax.activity import is_active
from sae_jax.feature_labels import CATEGORIES, LabelError

STATIC = Path(__file__).parent / "static"
RETRY_SECONDS = 2  # how soon a "loading" answer asks to be tried again


class BadRequest(ValueError):
    """A request field the API refuses (the message names it)."""


def _int_param(params, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name}: expected an integer, got {raw!r}") from None


def _float_param(params, name: str, default: float) -> float:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name}: expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise BadRequest(f"{name}: expected a finite number, got {raw!r}")
    return value


def feature_query(params, *, percent: bool = False) -> FeatureQuery:
    """Query parameters -> :class:`FeatureQuery` (``percent``: the page's form gives the
    frequency window in percent, the API in [0, 1]). Absent parameters take the
    :class:`FeatureQuery` defaults, so the page and the API open on the same list.
    ``window=1``/``0`` is the older spelling of ``scope=window``/``all``."""
    scale = 100.0 if percent else 1.0
    scope = params.get("scope", "") or DEFAULT_SCOPE
    window = params.get("window", "")
    if window not in ("", "0", "1", "on"):
        raise BadRequest(f"window: expected 0 or 1, got {window!r}")
    if window:
        implied = "window" if window in ("1", "on") else "all"
        if params.get("scope") and params["scope"] != implied:
            raise BadRequest(f"window: window={window} contradicts scope={params['scope']}")
        scope = implied
    try:
        return FeatureQuery(
            q=params.get("q", ""), sort=params.get("sort", "") or DEFAULT_SORT,
            offset=_int_param(params, "offset", 0),
            limit=_int_param(params, "limit", PAGE_SIZE),
            fmin=_float_param(params, "fmin", 0.0) / scale,
            fmax=_float_param(params, "fmax", scale) / scale,
            scope=scope, arch=params.get("arch", ""))
    except ValueError as e:
        raise BadRequest(str(e)) from None


def _feature_id(request: Request) -> int:
    raw = request.path_params["feature"]
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"feature: expected an integer id, got {raw!r}") from None


# A build with its edits, or a label, is a few hundred bytes: a bigger body is refused as
# soon as it passes this, never read whole.
MAX_BODY_BYTES = 65_536


def _too_large(size: str) -> HTTPException:
    return HTTPException(413, f"body: {size} bytes, more than the {MAX_BODY_BYTES:,} a "
                              f"request may hold")


class LongInteger:
    """An integer literal too long to be a value any field takes (Python refuses to turn
    over 4,300 digits into an int): kept as its length, so the field check names it."""

    def __init__(self, digits: int):
        self.digits = digits

    def __repr__(self) -> str:
        return f"an integer of {self.digits:,} digits"


def _parse_int(text: str):
    return int(text) if len(text) <= 100 else LongInteger(len(text.lstrip("-")))


async def _json_body(request: Request):
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large(f"{int(declared):,}")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _too_large("over " + f"{MAX_BODY_BYTES:,}")
    try:
        return json.loads(raw.decode("utf-8") if raw else "null", parse_int=_parse_int)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"body: not valid JSON ({e})") from None
    except RecursionError:  # e.g. 100,000 nested brackets
        raise BadRequest("body: JSON nested too deeply") from None


class Workbench:
    """The app's state: the run, its feature table, the templates and the lab's batcher
    (None: lab requests complete one at a time)."""

    def __init__(self, run: RunData, *, batch_window_ms: float = DEFAULT_WINDOW_MS):
        self.run = run
        self.table = FeatureTable(run)
        self.batcher = (CompletionBatcher(run, batch_window_ms / 1e3) if batch_window_ms > 0
                        else None)
        self.templates = Jinja2Templates(env=template_environment())
        self.ready = threading.Event()  # set when warmed up (at once when not warming)
        self.warm_seconds: dict[str, float] = {}
        self.warm_error: str | None = None

    # ------------------------------------------------------------------ startup

    def warm(self) -> None:
        """Compile and load everything the pages use (:func:`warm_up`); then ready. A
        failure is reported and the server serves anyway (the pages show the error)."""
        t0 = time.perf_counter()
        try:
            self.warm_seconds = warm_up(self.run, self.table, batched=self.batcher is not None)
        except Exception as e:
            self.warm_error = f"{type(e).__name__}: {e}"
            print(f"warning: warming the workbench failed: {self.warm_error}", flush=True)
        else:
            print(f"workbench ready in {time.perf_counter() - t0:.1f} s", flush=True)
        finally:
            self.ready.set()

    def status(self) -> dict:
        out = {"status": "ready" if self.ready.is_set() else "loading"}
        if self.warm_seconds:
            out["warm_seconds"] = self.warm_seconds
        if self.warm_error:
            out["error"] = self.warm_error
        if self.batcher is not None and self.batcher.batches:
            out["completion_batches"] = {"batches": self.batcher.batches,
                                         "requests": self.batcher.requests}
        return out

    def when_ready(self, handler):
        """``handler``, answering "loading" until the warm-up is done."""
        async def guarded(request: Request):
            if not self.ready.is_set():
                return self.loading(request)
            return await handler(request)
        return guarded

    def loading(self, request: Request):
        headers = {"Retry-After": str(RETRY_SECONDS)}
        if _wants_json(request):
            return JSONResponse({"status": "loading"}, status_code=503, headers=headers)
        html = template_environment().get_template("wb_loading.html.j2").render(
            run=self.run_info(), retry=RETRY_SECONDS)
        return Response(html, status_code=503, media_type="text/html", headers=headers)

    async def api_status(self, request: Request):
        return JSONResponse(self.status())

    # ------------------------------------------------------------------ API

    def feature_doc(self, feature: int) -> dict:
        """A feature's page, explanation and label as one JSON-ready dict."""
        page = self.run.feature_page(feature)
        return {"feature": feature, "page": page, "explanation": self.run.explanation(feature),
                "label": self.run.labels().get(str(feature)),
                "missing": self.run.missing()}

    def run_info(self) -> dict:
        run = self.run
        return {"name": run.name, "workdir": str(run.workdir), "num_features": run.num_features,
                "architecture": run.architecture, "missing": run.missing(),
                "on_activations": run.on_activations,
                "categories": list(CATEGORIES), "sorts": list(SORTS), "max_limit": MAX_LIMIT}

    async def api_run(self, request: Request):
        return JSONResponse(self.run_info())

    async def api_features(self, request: Request):
        query = feature_query(request.query_params)
        return JSONResponse(await _threaded(self.table.query, query))

    async def api_feature(self, request: Request):
        feature = _feature_id(request)
        return JSONResponse(await _threaded(self.feature_doc, feature))

    def needs_primary(self, what: str) -> None:
        """A run on activation files has no primary model: ``what`` is not found (404)."""
        if self.run.on_activations:
            raise self.run.no_primary(what)

    async def api_rung_curves(self, request: Request):
        from apps.analysis.report import rung_curves_svg

        feature = _feature_id(request)
        curves = await _threaded(self.run.rung_curves, feature)
        return JSONResponse({"feature": feature, "curves": curves,
                             "svg": rung_curves_svg(curves)})

    async def api_label(self, request: Request):
        feature = _feature_id(request)
        self.run.check_feature(feature)
        if request.method == "DELETE":
            label = self.run.remove_label(feature)
            self.table.relabel(feature)
            return JSONResponse({"feature": feature, "removed": label})
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise BadRequest("body: expected an object {name, category, notes}")
        unknown = set(body) - {"name", "category", "notes"}
        if unknown:
            raise BadRequest(f"{sorted(unknown)[0]}: unknown field; fields: name, category, "
                             "notes")
        if not isinstance(body.get("name"), str) or not body["name"].strip():
            raise BadRequest("name: a label needs a non-empty name")
        label = self.run.set_label(feature, body["name"], body.get("category"),
                                   body.get("notes"))
        self.table.relabel(feature)
        return JSONResponse({"feature": feature, "label": label})

    async def api_lab(self, request: Request):
        self.needs_primary("the build lab")
        return JSONResponse(await _threaded(lab_choices, self.run))

    async def api_complete(self, request: Request):
        self.needs_primary("the build lab")
        body = await _json_body(request)
        req = await _threaded(lab_request, body, self.run)  # a bad field fails here, alone
        if self.batcher is None:
            return JSONResponse(await _threaded(complete_lab, self.run, req))
        return JSONResponse(await self.batcher.complete(req))

    # ------------------------------------------------------------------ pages

    def _page(self, request, name: str, **context):
        context.setdefault("missing", self.run.missing())
        return self.templates.TemplateResponse(request, name, dict(
            context, run=self.run_info(), title=context.get("title", self.run.name)))

    async def list_page(self, request: Request):
        query = feature_query(request.query_params, percent=True)
        result = await _threaded(self.table.query, query)
        params = {k: v for k, v in request.query_params.items()
                  if k not in ("offset", "scope", "window")}
        params["scope"] = query.scope
        other = {k: v for k, v in params.items() if k != "scope"}
        other["scope"] = next(s for s in SCOPES if s != query.scope)
        return self._page(request, "wb_list.html.j2", query=query, result=result,
                          params=params, other_scope=other, sorts=SORTS,
                          title=f"Features of {self.run.name}")

    async def feature_page(self, request: Request):
        feature = _feature_id(request)
        doc = await _threaded(self.feature_doc, feature)
        index = self.run.index()
        view = feature_view(doc["page"], doc["explanation"], doc["label"],
                            index["hist_edges"].tolist(), int(index["num_builds"]))
        view["top_examples"] = [_with_lab_link(ex) for ex in view["top_examples"]]
        view["bands"] = [dict(b, examples=[_with_lab_link(ex) for ex in b["examples"]])
                         for b in view.get("bands", [])]
        view["fires_together"] = [self._described(g) for g in view.get("fires_together", [])]
        set_link = (None if self.run.on_activations else
                    await _threaded(self.set_link, feature) or f"/lab?feature={feature}")
        return self._page(request, "wb_feature.html.j2", page=view, label=doc["label"],
                          categories=CATEGORIES, edges=index["hist_edges"].tolist(),
                          set_link=set_link, title=f"Feature {feature} of {self.run.name}")

    def set_link(self, feature: int, value: float | None = None) -> str | None:
        """The build lab with ``feature`` set on the mains of its strongest build (None: it
        never fires): to 0 where it fires on them (what it adds to the completion), else to
        its maximum (what it would add); or to ``value``."""
        start = self.run.top_build_start(feature)
        if start is None:
            return None
        if value is None:
            fires = is_active(feature_activation(self.run, *start, feature))
            value = 0.0 if fires else float(self.run.index()["max_act"][feature])
        return lab_url(*start, feature=feature, value=value)

    def _described(self, entry: dict) -> dict:
        """A feature of a list on a page, with its label and explanation."""
        g = entry["feature"]
        label = self.run.labels().get(str(g))
        return dict(entry, label=label["name"] if label else "",
                    explanation=(self.run.explanation(g) or {}).get("rule_text", ""))

    async def lab_page(self, request: Request):
        self.needs_primary("the build lab")
        params = request.query_params
        if params.get("feature") and not params.get("weapon"):
            # A feature alone: start from the mains of its strongest build, not an empty one.
            try:
                feature = int(params["feature"])
            except ValueError:
                raise BadRequest(f"feature: expected an integer id, got "
                                 f"{params['feature']!r}") from None
            value = _float_param(params, "value", math.nan)
            link = await _threaded(self.set_link, feature,
                                   None if math.isnan(value) else value)
            if link is not None:
                return RedirectResponse(link, status_code=303)
        return self._page(request, "wb_lab.html.j2", title=f"Build lab: {self.run.name}")

    async def report_css(self, request: Request):
        return Response((TEMPLATES / "report.css").read_text(encoding="utf-8"),
                        media_type="text/css")


async def _threaded(fn, *args):
    """Model and index work off the event loop (the run's lock serialises it)."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def _with_lab_link(example: dict) -> dict:
    """An example build with the build-lab address that loads it (``lab``)."""
    if "weapon_id" not in example:
        return example
    return dict(example, lab=lab_url(example["weapon_id"], example["abilities"]))


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error(request: Request, status: int, message: str):
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    env = template_environment()
    html = env.get_template("wb_error.html.j2").render(status=status, message=message)
    return Response(html, status_code=status, media_type="text/html")


def create_app(workdir, *, num_builds: int | None = None, warm: bool = False,
               batch_window_ms: float = DEFAULT_WINDOW_MS) -> Starlette:
    """The workbench app over the run in ``workdir``. Nothing heavy loads here. ``warm``:
    compile and load in a background thread (:meth:`Workbench.warm`), answering "loading"
    until done; without it everything loads on first use. ``batch_window_ms``: how long a
    lab request waits for others to complete with (0: each alone)."""
    run = open_run(workdir, num_builds=num_builds)
    bench = Workbench(run, batch_window_ms=batch_window_ms)

    async def bad_request(request, exc):
        return _error(request, 400, str(exc))

    async def not_found(request, exc):
        return _error(request, 404, str(exc).strip("'\""))

    async def http_error(request, exc):
        return _error(request, exc.status_code, str(exc.detail))

    async def server_error(request, exc):
        return _error(request, 500, f"{type(exc).__name__}: {exc}")

    gate = bench.when_ready
    routes = [
        Route("/", gate(bench.list_page)),
        Route("/feature/{feature}", gate(bench.feature_page)),
        Route("/lab", gate(bench.lab_page)),
        Route("/static/report.css", bench.report_css),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/api/status", bench.api_status),
        Route("/api/run", bench.api_run),
        Route("/api/features", gate(bench.api_features)),
        Route("/api/features/{feature}", gate(bench.api_feature)),
        Route("/api/features/{feature}/rung_curves", gate(bench.api_rung_curves)),
        Route("/api/features/{feature}/label", gate(bench.api_label),
              methods=["POST", "DELETE"]),
        Route("/api/lab", gate(bench.api_lab)),
        Route("/api/complete", gate(bench.api_complete), methods=["POST"]),
    ]
    handlers = {BadRequest: bad_request, LabRequestError: bad_request, LabelError: bad_request,
                ValueError: bad_request, LookupError: not_found,
                HTTPException: http_error, Exception: server_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.workbench = bench
    if warm:
        threading.Thread(target=bench.warm, daemon=True, name="workbench-warm-up").start()
    else:
        bench.ready.set()
    return app
