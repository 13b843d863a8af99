"""The static HTML feature browser: ``DIR/report/index.html``.

Opens straight from disk (no server, no network): CSS and JavaScript inlined,
charts as inline SVG, training curves as a PNG beside the page. The page is
made from Jinja2 templates in ``apps/templates/`` (shared with anything else
that shows features) out of the dict that :func:`apps.analysis.pipeline.analyze_features`
builds, plus the run's explanations (``explanations.json``) and human labels
(``feature_labels.json``) when present:

- a legend for every number on the page;
- the concept-recovery table (best SAE feature vs best raw neuron per concept,
  with its threshold and its explanation);
- one card per top-ranked feature: explanation with held-out scores and causal
  check, human label, histogram, weapon-class breakdown, AP-rung curves, top
  activating builds, promoted and suppressed tokens, steering;
- a sortable table of every feature (compact JSON rows drawn by report.js a page at a
  time, so a 24,576-feature SAE's page stays a few MB); search over ids, explanations,
  labels, tokens and concepts; a frequency filter; ordering by score or explanation F1.
"""

from __future__ import annotations

import html
import os
import shutil
from functools import cache
from pathlib import Path

import jinja2
from markupsafe import Markup

from primary.vocab import ABILITY_NAMES, AP_THRESHOLDS, STANDARD_ABILITIES
from runkit.jsonio import write_json


def ability_label(name: str) -> str:
    """``swim_speed_up`` -> ``Swim Speed Up`` (as the game writes it)."""
    return ABILITY_NAMES.get(name) or name.replace("_", " ").title()


def token_label(token: str) -> str:
    """``swim_speed_up_12`` -> ``Swim Speed Up ≥12``; main-only and special tokens as named."""
    base, _, thr = token.rpartition("_")
    if base in STANDARD_ABILITIES and thr.isdigit() and int(thr) in AP_THRESHOLDS:
        return f"{ability_label(base)} \u2265{thr}"
    if token.startswith("<"):
        return token
    return ability_label(token)


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _num(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.3e}"


def histogram_svg(counts, edges, *, width: int = 300, height: int = 110) -> str:
    """Inline SVG bar chart of ``counts (nb,)`` over bin ``edges (nb + 1,)``."""
    counts = [int(c) for c in counts]
    top = max(max(counts, default=0), 1)
    pad_l, pad_b, pad_t = 34, 26, 6
    w, h = width - pad_l - 4, height - pad_b - pad_t
    bw = w / max(len(counts), 1)
    bars = []
    for i, c in enumerate(counts):
        bh = h * c / top
        x = pad_l + i * bw
        bars.append(f'<rect x="{x:.1f}" y="{pad_t + h - bh:.1f}" width="{max(bw - 1, 1):.1f}" '
                    f'height="{bh:.1f}"><title>({edges[i]:.2f}, {edges[i + 1]:.2f}]: {c}'
                    '</title></rect>')
    ticks = sorted({1, len(counts) // 3, 2 * len(counts) // 3, len(counts)} - {0})
    labels = "".join(
        f'<text x="{pad_l + i * bw:.1f}" y="{pad_t + h + 11}" class="tick" '
        f'text-anchor="middle">{edges[i]:.2g}</text>' for i in ticks)
    axis = (f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" '
            f'class="axis"/>{labels}'
            f'<text x="{pad_l + w / 2}" y="{height - 1}" class="tick" text-anchor="middle">'
            'activation (log bins)</text>'
            f'<text x="{pad_l - 4}" y="{pad_t + 8}" class="tick" text-anchor="end">{top}</text>'
            f'<text x="{pad_l - 4}" y="{pad_t + h}" class="tick" text-anchor="end">0</text>')
    return (f'<svg class="hist" width="{width}" height="{height}" role="img" '
            f'aria-label="activation histogram">{"".join(bars)}{axis}</svg>')


TEMPLATES = Path(__file__).resolve().parents[1] / "templates"  # apps/templates
RUNG_COLOURS = ("#4a78c2", "#d97706", "#15803d", "#b91c1c", "#7c5cc4", "#0e7490")


def classes_svg(classes, base: float, *, width: int = 260, row: int = 15) -> str:
    """Horizontal bars of P(active | class) with the base rate as a dashed line."""
    classes = list(classes)[:8]
    if not classes:
        return ""
    label_w, pad_r = 70, 40
    w = width - label_w - pad_r
    top = max([c["rate"] for c in classes] + [base, 1e-9])
    height = row * len(classes) + 16
    parts = []
    for i, c in enumerate(classes):
        y = 4 + i * row
        bw = w * c["rate"] / top
        parts.append(f'<text x="{label_w - 4}" y="{y + 10}" class="tick" text-anchor="end">'
                     f'{_e(c["class"])}</text><rect class="bar" x="{label_w}" y="{y + 1}" '
                     f'width="{bw:.1f}" height="{row - 4}"><title>{_e(c["class"])}: '
                     f'{c["rate"]:.1%} active (base {base:.1%}), {c.get("support", "?")} builds'
                     f'</title></rect><text x="{label_w + bw + 3:.1f}" y="{y + 10}" class="tick">'
                     f'{c["rate"]:.0%}</text>')
    bx = label_w + w * base / top
    parts.append(f'<line class="base" x1="{bx:.1f}" y1="2" x2="{bx:.1f}" y2="{height - 12}"/>'
                 f'<text x="{bx:.1f}" y="{height - 2}" class="tick" text-anchor="middle">'
                 f'base {base:.0%}</text>')
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="activation rate '
            f'by weapon class">{"".join(parts)}</svg>')


def rung_curves_svg(curves: dict, *, width: int = 280, height: int = 150) -> str:
    """Line chart: mean activation against AP, one line per ability (at most six)."""
    items = [(a, c) for a, c in curves.items() if c.get("ap") and c.get("mean")][:6]
    if not items:
        return ""
    pad_l, pad_b, pad_t, legend_w = 34, 22, 6, 0
    w, h = width - pad_l - 8 - legend_w, height - pad_b - pad_t - 12 * len(items)
    max_ap = max(max(c["ap"]) for _, c in items) or 1
    top = max(max(c["mean"]) for _, c in items)
    top = top if top > 0 else 1.0
    lines, legend = [], []
    for i, (ability, c) in enumerate(items):
        colour = RUNG_COLOURS[i % len(RUNG_COLOURS)]
        pts = " ".join(f"{pad_l + w * ap / max_ap:.1f},{pad_t + h - h * max(m, 0) / top:.1f}"
                       for ap, m in zip(c["ap"], c["mean"]))
        lines.append(f'<polyline class="line" stroke="{colour}" points="{pts}"><title>'
                     f'{_e(ability_label(ability))}</title></polyline>')
        legend.append(f'<text x="{pad_l}" y="{pad_t + h + 24 + 12 * i}" class="tick" '
                      f'fill="{colour}">&#9644; {_e(ability_label(ability))}</text>')
    axis = (f'<line class="axis" x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}"/>'
            f'<text x="{pad_l}" y="{pad_t + h + 11}" class="tick">0 AP</text>'
            f'<text x="{pad_l + w}" y="{pad_t + h + 11}" class="tick" text-anchor="end">'
            f'{max_ap} AP</text><text x="{pad_l - 4}" y="{pad_t + 8}" class="tick" '
            f'text-anchor="end">{top:.2g}</text><text x="{pad_l - 4}" y="{pad_t + h}" '
            'class="tick" text-anchor="end">0</text>')
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="mean activation by '
            f'AP rung">{"".join(lines)}{axis}{"".join(legend)}</svg>')


@cache
def template_environment() -> jinja2.Environment:
    """The Jinja2 environment of the report templates (autoescaped; filters for labels)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(token=token_label, ability=ability_label, num=_num)
    return env


def _dead_note(doc: dict) -> str:
    """Say how the full-build dead count relates to the evaluation's, when they differ: a
    feature can be silent on full builds and still fire on the partial builds the SAE was
    trained and evaluated on (the model's inputs mid-completion)."""
    fraction = (doc.get("metrics") or {}).get("dead_fraction")
    if fraction is None:
        return ""
    eval_dead = int(round(fraction * doc["num_features"]))
    if eval_dead == doc["dead"]:
        return ""
    return (f" On the evaluation's partial builds (the inputs the SAE was trained on) "
            f"{eval_dead} are dead: the other {doc['dead'] - eval_dead} silent features "
            "fire only on partial builds.") if eval_dead < doc["dead"] else (
            f" On the evaluation's partial builds {eval_dead} are dead.")


_METRIC_NAMES = {"fve": "variance explained", "mse": "MSE",
                 "l0": "active features per evaluation input",
                 "dead_fraction": "dead on the evaluation inputs",
                 "dense_fraction": "dense (≥30%) on the evaluation inputs",
                 "loss_recovered": "loss recovered",
                 "kl_spliced": "KL of spliced predictions", "logit_cosine": "logit cosine",
                 "top5_agreement": "top-5 agreement", "shrinkage": "shrinkage (1 = none)",
                 "steps": "SAE steps"}


def _metric_items(doc: dict) -> list[tuple[str, str]]:
    """The run's held-out metrics (evaluation on partial builds, the training distribution)."""
    out = []
    for k, v in (doc.get("metrics") or {}).items():
        v = float(v)
        text = f"{int(v)}" if k == "steps" else (f"{v:.1%}" if k.endswith("_fraction")
                                                 else f"{v:.3g}")
        out.append((_METRIC_NAMES.get(k, k), text))
    return out


def _search_text(*parts) -> str:
    return " ".join(str(p) for p in parts if p).lower()


def _page_view(page: dict, expl: dict | None, label: dict | None, edges) -> dict:
    """A page of the analysis with what the templates need attached."""
    view = dict(page, expl=expl, label=label)
    view["search"] = _search_text(
        f"f{page['id']}", page["id"], expl and expl.get("sentence"), label and label.get("name"),
        label and label.get("notes"),
        *[token_label(t) + " " + t for t, _ in page["promoted"][:4]],
        page.get("concept") and page["concept"]["name"])
    view["hist_svg"] = histogram_svg(page["hist"], edges)
    view["classes_svg"] = classes_svg(expl["classes"], page["frequency"]) if expl and expl.get(
        "classes") else ""
    view["rung_svg"] = rung_curves_svg(expl["rung_curves"]) if expl and expl.get(
        "rung_curves") else ""
    by_row = {ex["row"]: ex for ex in page["top_examples"]}
    view["steering"] = [dict(item, who=by_row[item["row"]]["weapon"] if item["row"] in by_row
                             else f"build {item['row']}") for item in page.get("steering", [])]
    view.setdefault("steered_builds", [])
    return view


def feature_view(page: dict, expl: dict | None, label: dict | None, edges) -> dict:
    """What the feature card macro (``feature.html.j2``) needs for one analysis ``page``,
    its explanation and human label (either None); ``edges``: the histogram's bin edges."""
    return _page_view(page, expl, label, edges)


TABLE_COLUMNS = ("id", "label", "explanation", "f1", "score", "frequency", "mean_when_active",
                 "max_act", "in_window", "has_section")


def _table_view(features: list, explained: dict, labels: dict, shown: set) -> list[list]:
    """The all-features table as compact rows (:data:`TABLE_COLUMNS`), drawn by report.js:
    an HTML row per feature would make a 24,576-feature page several times larger."""
    rows = []
    for r in features:
        e, lab = explained.get(str(r["id"])), labels.get(str(r["id"]))
        rows.append([r["id"], (lab or {}).get("name", ""), (e or {}).get("rule_text", ""),
                     round(e["f1"], 4) if e else None, float(f"{r['score']:.5g}"),
                     round(r["frequency"], 7), round(r["mean_when_active"], 5),
                     round(r["max_act"], 5), int(r["in_window"]), int(r["id"] in shown)])
    return rows


def _concept_rows(concepts: dict, explained: dict, ground_truth: dict | None) -> list[dict]:
    def matches(tally):
        items = (tally or {}).get("concepts", [])
        return {item.get("concept"): item.get("match") for item in items}

    single = matches(ground_truth)
    paired = matches((ground_truth or {}).get("pairs"))

    def text(f):
        return (explained.get(str(f)) or {}).get("rule_text", "")

    return [dict(r, explanation=text(r["feature"]), gt_match=single.get(r["concept"]),
                 pair_explanations=[text(f) for f in r.get("pair_features") or ()],
                 gt_pair_match=paired.get(r["concept"])) for r in concepts["rows"]]


def render_report(doc: dict) -> str:
    """The whole page as one HTML string. ``doc`` may carry ``explanations`` (the
    ``explanations.json`` dict) and ``labels`` (``{feature id: label}``)."""
    explanations = doc.get("explanations") or {}
    explained = explanations.get("features") or {}
    labels = doc.get("labels") or {}
    summary = explanations.get("summary") or {}
    edges = doc["hist_edges"]
    pages = [_page_view(p, explained.get(str(p["id"])), labels.get(str(p["id"])), edges)
             for p in doc["pages"]]
    shown = {p["id"] for p in pages}
    run = doc.get("run") or {}
    concepts = doc.get("concepts")
    ground_truth = summary.get("ground_truth") or None
    if concepts:
        concepts = dict(concepts, rows=_concept_rows(concepts, explained, ground_truth))
    num_top = doc.get("num_top", len(pages))
    return template_environment().get_template("report.html.j2").render(
        doc=doc, title=doc.get("title", "SAE feature browser"), pages=pages, shown=shown,
        edges=edges, num_top=num_top, extras=len(pages) - num_top,
        run_line=" \u00b7 ".join(f"{k}: {v}" for k, v in run.items() if v is not None),
        dead_note=_dead_note(doc), metric_items=_metric_items(doc),
        curves=bool(doc.get("curves_png")), concepts=concepts, ground_truth=ground_truth,
        expl_summary=summary or None,
        table=_table_view(doc["features"], explained, labels, shown),
        css=_package_text("report.css"), js=_package_text("report.js"))


def _package_text(name: str) -> Markup:
    """A CSS or JavaScript file of the package, inlined as is: escaping would turn its
    ``>`` and ``&&`` into entities that neither language reads."""
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    end = "</" + name.rsplit(".", 1)[1].replace("js", "script").replace("css", "style")
    if end in text.lower():
        raise ValueError(f"{TEMPLATES / name} contains {end!r}, which would end its element")
    return Markup(text)


def write_report(out_dir: str | os.PathLike, doc: dict) -> Path:
    """Write ``out_dir/index.html``, ``features.json`` (its pages and numbers, for scripts;
    the explanations are the run's ``explanations.json``) and a
    copy of the run's training curves when ``doc["curves_png"]`` names them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.html"
    tmp = out / "index.html.tmp"
    tmp.write_text(render_report(doc), encoding="utf-8")
    os.replace(tmp, index)
    if doc.get("curves_png"):
        shutil.copyfile(doc["curves_png"], out / "curves.png")
    # The full table and the explanations of every feature stay out: the table is in the
    # page, the explanations in the run's explanations.json (74 MB here would copy it for
    # a 24,576-feature SAE).
    write_json(out / "features.json",
               {k: v for k, v in doc.items() if k not in ("features", "explanations")},
               indent=None)
    return index
