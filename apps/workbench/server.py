"""The workbench: a local web app over one SAE run.

    python -m apps.serve --workdir=RUN [--host=127.0.0.1] [--port=8000]   (apps/serve.py)

Pages (server-rendered from the report's Jinja2 templates; plain JavaScript from
``apps/workbench/static/``, nothing fetched from the network):

- ``/``: every feature; search over ids, explanations, labels, tokens and concepts,
  a frequency window, sorting by score, frequency or explanation F1, pages;
- ``/feature/{id}``: the static report's feature card for any feature, with a label form;
- ``/lab``: the build lab: a weapon and abilities in, the model's legal completion,
  token probabilities and active features out; features set to values, with a slot diff.

JSON API (also for scripts): ``GET /api/run``, ``GET /api/features?q=&sort=&offset=&limit=
&fmin=&fmax=&window=&arch=``, ``GET /api/features/{id}``, ``POST``/``DELETE
/api/features/{id}/label`` (``{"name", "category", "notes"}``), ``GET /api/lab``,
``POST /api/complete`` (``{"weapon", "abilities": {name: AP}, "edits": [{"feature",
"value"}]}``). A bad request gets a 4xx whose ``error`` names the bad field.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from apps.analysis.report import TEMPLATES, feature_view, template_environment
from apps.workbench.feature_list import MAX_LIMIT, SORTS, FeatureQuery, FeatureTable
from apps.workbench.lab import LabRequestError, complete_lab, lab_choices, lab_request
from apps.workbench.run_state import RunData
from sae_jax.feature_labels import CATEGORIES, LabelError

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 50


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
    frequency window in percent, the API in [0, 1])."""
    scale = 100.0 if percent else 1.0
    window = params.get("window", "")
    if window not in ("", "0", "1", "on"):
        raise BadRequest(f"window: expected 0 or 1, got {window!r}")
    try:
        return FeatureQuery(
            q=params.get("q", ""), sort=params.get("sort", "score") or "score",
            offset=_int_param(params, "offset", 0),
            limit=_int_param(params, "limit", PAGE_SIZE),
            fmin=_float_param(params, "fmin", 0.0) / scale,
            fmax=_float_param(params, "fmax", scale) / scale,
            window_only=window in ("1", "on"), arch=params.get("arch", ""))
    except ValueError as e:
        raise BadRequest(str(e)) from None


def _feature_id(request: Request) -> int:
    raw = request.path_params["feature"]
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"feature: expected an integer id, got {raw!r}") from None


async def _json_body(request: Request):
    raw = await request.body()
    try:
        return json.loads(raw.decode("utf-8") if raw else "null")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"body: not valid JSON ({e})") from None


class Workbench:
    """The app's state: the run, its feature table and the templates."""

    def __init__(self, run: RunData):
        self.run = run
        self.table = FeatureTable(run)
        self.templates = Jinja2Templates(env=template_environment())

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
                "categories": list(CATEGORIES), "sorts": list(SORTS), "max_limit": MAX_LIMIT}

    async def api_run(self, request: Request):
        return JSONResponse(self.run_info())

    async def api_features(self, request: Request):
        query = feature_query(request.query_params)
        return JSONResponse(await _threaded(self.table.query, query))

    async def api_feature(self, request: Request):
        feature = _feature_id(request)
        return JSONResponse(await _threaded(self.feature_doc, feature))

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
        return JSONResponse(await _threaded(lab_choices, self.run))

    async def api_complete(self, request: Request):
        body = await _json_body(request)
        req = await _threaded(lab_request, body, self.run)
        return JSONResponse(await _threaded(complete_lab, self.run, req))

    # ------------------------------------------------------------------ pages

    def _page(self, request, name: str, **context):
        context.setdefault("missing", self.run.missing())
        return self.templates.TemplateResponse(request, name, dict(
            context, run=self.run_info(), title=context.get("title", self.run.name)))

    async def list_page(self, request: Request):
        query = feature_query(request.query_params, percent=True)
        result = await _threaded(self.table.query, query)
        params = {k: v for k, v in request.query_params.items() if k != "offset"}
        return self._page(request, "wb_list.html.j2", query=query, result=result,
                          params=params, sorts=SORTS, title=f"Features of {self.run.name}")

    async def feature_page(self, request: Request):
        feature = _feature_id(request)
        doc = await _threaded(self.feature_doc, feature)
        index = self.run.index()
        view = feature_view(doc["page"], doc["explanation"], doc["label"],
                            index["hist_edges"].tolist())
        return self._page(request, "wb_feature.html.j2", page=view, label=doc["label"],
                          categories=CATEGORIES, edges=index["hist_edges"].tolist(),
                          title=f"Feature {feature} of {self.run.name}")

    async def lab_page(self, request: Request):
        return self._page(request, "wb_lab.html.j2", title=f"Build lab: {self.run.name}")

    async def report_css(self, request: Request):
        return Response((TEMPLATES / "report.css").read_text(encoding="utf-8"),
                        media_type="text/css")


async def _threaded(fn, *args):
    """Model and index work off the event loop (the run's lock serialises it)."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error(request: Request, status: int, message: str):
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    env = template_environment()
    html = env.get_template("wb_error.html.j2").render(status=status, message=message)
    return Response(html, status_code=status, media_type="text/html")


def create_app(workdir, *, num_builds: int | None = None, warm: bool = False) -> Starlette:
    """The workbench app over the run in ``workdir``. Nothing heavy loads here; ``warm``
    starts loading the models and the feature index in a background thread."""
    run = RunData(workdir, num_builds=num_builds)
    bench = Workbench(run)

    async def bad_request(request, exc):
        return _error(request, 400, str(exc))

    async def not_found(request, exc):
        return _error(request, 404, str(exc).strip("'\""))

    async def http_error(request, exc):
        return _error(request, exc.status_code, str(exc.detail))

    async def server_error(request, exc):
        return _error(request, 500, f"{type(exc).__name__}: {exc}")

    routes = [
        Route("/", bench.list_page),
        Route("/feature/{feature}", bench.feature_page),
        Route("/lab", bench.lab_page),
        Route("/static/report.css", bench.report_css),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/api/run", bench.api_run),
        Route("/api/features", bench.api_features),
        Route("/api/features/{feature}", bench.api_feature),
        Route("/api/features/{feature}/rung_curves", bench.api_rung_curves),
        Route("/api/features/{feature}/label", bench.api_label, methods=["POST", "DELETE"]),
        Route("/api/lab", bench.api_lab),
        Route("/api/complete", bench.api_complete, methods=["POST"]),
    ]
    handlers = {BadRequest: bad_request, LabRequestError: bad_request, LabelError: bad_request,
                ValueError: bad_request, LookupError: not_found,
                HTTPException: http_error, Exception: server_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.workbench = bench
    if warm:
        threading.Thread(target=_warm, args=(bench,), daemon=True).start()
    return app


def _warm(bench: Workbench) -> None:
    """Load the models, the index and the table; compile the lab's completion once."""
    try:
        bench.table.ensure()
        choices = lab_choices(bench.run)
        req = lab_request({"weapon": choices["weapons"][0]["id"], "abilities": {}}, bench.run)
        complete_lab(bench.run, req)
        complete_lab(bench.run, lab_request(  # the steered model compiles too
            {"weapon": choices["weapons"][0]["id"], "abilities": {},
             "edits": [{"feature": 0, "value": 0.0}]}, bench.run))
    except Exception as e:  # the pages report the same error when asked
        print(f"warning: warming the workbench failed: {type(e).__name__}: {e}")
