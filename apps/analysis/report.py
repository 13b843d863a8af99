"""The static HTML feature browser: ``DIR/report/index.html`` and the files it loads.

Opens straight from disk (no server, no network): CSS and JavaScript inlined,
charts as inline SVG, training curves as a PNG beside the page. The page is
made from Jinja2 templates in ``apps/templates/`` (shared with anything else
that shows features) out of the dict that :func:`apps.analysis.pipeline.analyze_features`
builds, plus the run's explanations (``explanations.json``) and human labels
(``feature_labels.json``) when present:

- a legend for every number on the page;
- the concept-recovery table (best SAE feature vs best raw neuron per concept,
  with its threshold and its explanation);
- absorption and splitting on the AP rungs (``absorption.json``): the run's figures and a
  table of the measured rungs;
- one row per top-ranked feature that opens into its card: explanation with held-out
  scores and causal check, the AP rungs it is a main latent of or absorbs, human label,
  histogram, weapon-class breakdown, AP-rung curves, top activating builds, promoted and
  suppressed tokens, steering;
- a sortable table of every feature (compact JSON rows drawn by report.js a page at a
  time); search over ids, explanations, labels, tokens and concepts; a frequency filter;
  ordering by score or explanation F1.

The first load is ``index.html`` alone, a small row per card: each card is a script of
its own (``cards/f<id>.js``) and the table's rows another (``table.js``), loaded when the
card or the table is opened. Scripts, not JSON read with fetch(): a page opened from
``file://`` may not fetch the files beside it.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path

import jinja2
from markupsafe import Markup

from primary.vocab import ABILITY_NAMES, AP_THRESHOLDS, STANDARD_ABILITIES
from runkit.jsonio import write_json
from sae_jax.concept_recovery import assigned_concept


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


def share(x: float) -> str:
    """A feature's frequency as the report writes it everywhere: ``15.3%``, ``0.05%``.
    Halves round up, as a reader rounds the shown digits (15.25% -> 15.3%): frequencies
    of k / 2,000 builds end in 5 often."""
    pct = Decimal(repr(100 * float(x)))
    if pct >= 1 or pct == 0:
        return f"{pct.quantize(Decimal('0.1'), ROUND_HALF_UP)}%"
    return f"{float(pct):.2g}%"


TICK_CHAR_PX = 6.5  # a generous width of one character of the charts' 10px text


def _fit_x(x: float, text: str, width: float, anchor: str = "middle") -> float:
    """``x`` moved the least that keeps ``text`` (anchored at ``x``) inside ``0..width``,
    by a generous estimate of its width: a label at an axis's end is never clipped."""
    size = TICK_CHAR_PX * len(text)
    left = x - size * {"start": 0.0, "middle": 0.5, "end": 1.0}[anchor]
    shift = max(1 - left, 0.0) or min(width - 1 - (left + size), 0.0)
    return x + shift


def _tick(x: float, y: float, text: str, width: float, anchor: str = "middle",
          cls: str = "tick") -> str:
    """An SVG text label kept inside a chart ``width`` wide (see :func:`_fit_x`)."""
    return (f'<text x="{_fit_x(x, text, width, anchor):.1f}" y="{y}" class="{cls}" '
            f'text-anchor="{anchor}">{_e(text)}</text>')


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
    labels = "".join(_tick(pad_l + i * bw, pad_t + h + 11, f"{edges[i]:.2g}", width)
                     for i in ticks)
    axis = (f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" '
            f'class="axis"/>{labels}'
            + _tick(pad_l + w / 2, height - 1, "activation (log bins)", width)
            + _tick(pad_l - 4, pad_t + 8, str(top), width, "end")
            + _tick(pad_l - 4, pad_t + h, "0", width, "end"))
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
        parts.append(_tick(label_w - 4, y + 10, str(c["class"]), width, "end")
                     + f'<rect class="bar" x="{label_w}" y="{y + 1}" '
                     f'width="{bw:.1f}" height="{row - 4}"><title>{_e(c["class"])}: '
                     f'{c["rate"]:.1%} active (base {share(base)}), {c.get("support", "?")} '
                     'builds</title></rect>'
                     + _tick(label_w + bw + 3, y + 10, f'{c["rate"]:.0%}', width, "start"))
    bx = label_w + w * base / top
    # The base rate is the card's frequency, written as the card writes it.
    parts.append(f'<line class="base" x1="{bx:.1f}" y1="2" x2="{bx:.1f}" y2="{height - 12}"/>'
                 + _tick(bx, height - 2, f"base {share(base)}", width))
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
        # Class "key", not "tick": the stylesheet's grey fill of ticks would beat the
        # entry's own fill attribute.
        legend.append(f'<text x="{pad_l}" y="{pad_t + h + 24 + 12 * i}" class="key" '
                      f'fill="{colour}">&#9644; {_e(ability_label(ability))}</text>')
    axis = (f'<line class="axis" x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}"/>'
            + _tick(pad_l, pad_t + h + 11, "0 AP", width, "start")
            + _tick(pad_l + w, pad_t + h + 11, f"{max_ap} AP", width, "end")
            + _tick(pad_l - 4, pad_t + 8, f"{top:.2g}", width, "end")
            + _tick(pad_l - 4, pad_t + h, "0", width, "end"))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="mean activation by '
            f'AP rung">{"".join(lines)}{axis}{"".join(legend)}</svg>')


@cache
def template_environment() -> jinja2.Environment:
    """The Jinja2 environment of the report templates (autoescaped; filters for labels)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(token=token_label, ability=ability_label, num=_num, share=share)
    return env


def _never_fire(count: int, what: str) -> str:
    return f"{count:,} {what} {'never fires' if count == 1 else 'never fire'}"


def dead_sentence(doc: dict) -> str:
    """The run's two dead counts in one sentence, each with the inputs it counts: the
    analysis's full builds, and the evaluation's partial builds (the model's inputs
    mid-completion, which the SAE was trained on). A feature silent on full builds can
    fire on partial ones, so the two differ. A run on activation files analyzes its
    evaluation's rows: one count."""
    dead = doc["dead"]
    if doc.get("on_activations"):
        return (f"{_never_fire(dead, 'feature' if dead == 1 else 'features')} on the "
                f"{doc['num_builds']:,} held-out analysis rows.")
    full = (f"{_never_fire(dead, 'feature' if dead == 1 else 'features')} on the "
            f"{doc['num_builds']:,} full analysis builds")
    fraction = (doc.get("metrics") or {}).get("dead_fraction")
    if fraction is None:
        return full + "."
    partial = int(round(fraction * doc["num_features"]))
    return (f"{full}; {_never_fire(partial, f'({fraction:.1%})')} on the evaluation's partial "
            "builds, the inputs the SAE was trained on.")


_METRIC_NAMES = {"fve": "variance explained", "mse": "MSE",
                 "l0": "active features per evaluation input",
                 "dense_fraction": "dense (≥30%) on the evaluation inputs",
                 "loss_recovered": "loss recovered",
                 "kl_spliced": "KL of spliced predictions", "logit_cosine": "logit cosine",
                 "top5_agreement": "top-5 agreement", "shrinkage": "shrinkage (1 = none)",
                 "recon_cosine": "input-reconstruction cosine",
                 "steps": "SAE steps"}


def _metric_items(doc: dict) -> list[tuple[str, str]]:
    """The run's held-out metrics (evaluation on partial builds, the training distribution)."""
    out = []
    for k, v in (doc.get("metrics") or {}).items():
        if k == "dead_fraction":  # in the summary's dead sentence, beside the other count
            continue
        v = float(v)
        text = f"{int(v)}" if k == "steps" else (f"{v:.1%}" if k.endswith("_fraction")
                                                 else f"{v:.3g}")
        out.append((_METRIC_NAMES.get(k, k), text))
    return out


def _search_text(*parts) -> str:
    return " ".join(str(p) for p in parts if p).lower()


# The frequency that ends an explanation's sentence (sae_jax.rule_search.sentence):
# "... (F1 0.93, fires 11%)", "no rule: ... (fires 4%)".
_SENTENCE_FREQUENCY = re.compile(r"(?:, fires [^,()]*(?=\)$)| \(fires [^,()]*\)$)")


def rule_claim(expl: dict) -> str:
    """The explanation's sentence as a card shows it: without the frequency it ends with,
    which counts the explanations' builds at the rule's activity level and would sit
    beside the card's own, different frequency."""
    return _SENTENCE_FREQUENCY.sub("", expl.get("sentence") or expl.get("rule_text", ""))


def _page_view(page: dict, expl: dict | None, label: dict | None, edges,
               num_builds: int | None = None) -> dict:
    """A page of the analysis with what the templates need attached."""
    view = dict(page, expl=expl and dict(expl, claim=rule_claim(expl)), label=label)
    # What the card's one frequency counts.
    inputs = "rows" if page.get("on_rows") else "builds"
    view["base"] = f"{num_builds:,} analysis {inputs}" if num_builds else f"the analysis {inputs}"
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


def feature_view(page: dict, expl: dict | None, label: dict | None, edges,
                 num_builds: int | None = None) -> dict:
    """What the feature card macro (``feature.html.j2``) needs for one analysis ``page``,
    its explanation and human label (either None); ``edges``: the histogram's bin edges;
    ``num_builds``: how many analysis builds its frequency counts (None: not said)."""
    return _page_view(page, expl, label, edges, num_builds)


TABLE_COLUMNS = ("id", "label", "explanation", "f1", "score", "frequency", "mean_when_active",
                 "max_act", "in_window", "has_section", "frequency_shown")


def _table_view(features: list, explained: dict, labels: dict, shown: set) -> list[list]:
    """The all-features table as compact rows (:data:`TABLE_COLUMNS`), drawn by report.js:
    an HTML row per feature would make a 24,576-feature page several times larger."""
    rows = []
    for r in features:
        e, lab = explained.get(str(r["id"])), labels.get(str(r["id"]))
        rows.append([r["id"], (lab or {}).get("name", ""), (e or {}).get("rule_text", ""),
                     round(e["f1"], 4) if e else None, float(f"{r['score']:.5g}"),
                     round(r["frequency"], 7), round(r["mean_when_active"], 5),
                     round(r["max_act"], 5), int(r["in_window"]), int(r["id"] in shown),
                     share(r["frequency"])])  # as the cards write it, not as JS rounds
    return rows


def _concept_rows(concepts: dict, explained: dict, ground_truth: dict | None) -> list[dict]:
    def matches(tally):
        items = (tally or {}).get("concepts", [])
        return {item.get("concept"): item.get("match") for item in items}

    single = matches(ground_truth)
    paired = matches((ground_truth or {}).get("pairs"))

    def text(f):
        # A concept is defined on full builds: its row shows the rule read there (the one
        # the ground-truth check judges), whichever inputs the feature's card is read on.
        entry = explained.get(str(f)) or {}
        return ((entry.get("by_distribution") or {}).get("full") or entry).get("rule_text", "")

    return [dict(r, explanation=text(r["feature"]), gt_match=single.get(r["concept"]),
                 pair_explanations=[text(f) for f in r.get("pair_features") or ()],
                 gt_pair_match=paired.get(r["concept"])) for r in concepts["rows"]]


@dataclass(frozen=True)
class _Parts:
    """What the report's files are made of (:func:`_parts`)."""

    context: dict  # the index template's variables
    pages: list  # the cards' views, in ranked order
    table: list  # the all-features table's rows


def _parts(doc: dict) -> _Parts:
    explanations = doc.get("explanations") or {}
    explained = explanations.get("features") or {}
    labels = doc.get("labels") or {}
    summary = explanations.get("summary") or {}
    edges = doc["hist_edges"]
    concepts = doc.get("concepts")
    # A card's concept is the concept table's assignment, read here from the table itself.
    pages = [_page_view(dict(p, concept=assigned_concept(concepts, p["id"])) if concepts
                        else p, explained.get(str(p["id"])), labels.get(str(p["id"])), edges,
                        doc["num_builds"]) for p in doc["pages"]]
    shown = {p["id"] for p in pages}
    run = doc.get("run") or {}
    ground_truth = summary.get("ground_truth") or None
    if concepts:
        concepts = dict(concepts, rows=_concept_rows(concepts, explained, ground_truth))
    num_top = doc.get("num_top", len(pages))
    context = dict(
        doc=doc, title=doc.get("title", "SAE feature browser"), pages=pages, shown=shown,
        edges=edges, num_top=num_top, extras=len(pages) - num_top,
        run_line=" \u00b7 ".join(f"{k}: {v}" for k, v in run.items() if v is not None),
        dead_sentence=dead_sentence(doc), metric_items=_metric_items(doc),
        on_rows=bool(doc.get("on_activations")),
        curves=bool(doc.get("curves_png")), concepts=concepts, ground_truth=ground_truth,
        absorption=doc.get("absorption"),
        expl_summary=summary or None, num_table=len(doc["features"]),
        card_path=card_path, table_path=TABLE_SCRIPT,
        css=_package_text("report.css"), js=_package_text("report.js"))
    return _Parts(context, pages, _table_view(doc["features"], explained, labels, shown))


def render_report(doc: dict) -> str:
    """``index.html`` as one string: the page the report opens on, with a row per card.
    ``doc`` may carry ``explanations`` (the ``explanations.json`` dict) and ``labels``
    (``{feature id: label}``)."""
    return _render_index(_parts(doc))


def _render_index(parts: _Parts) -> str:
    return template_environment().get_template("report.html.j2").render(**parts.context)


TABLE_SCRIPT = "table.js"
CARDS = "cards"  # the folder of the cards' scripts, beside index.html


def card_path(feature: int) -> str:
    """Where feature ``feature``'s card lies, relative to ``index.html``."""
    return f"{CARDS}/f{int(feature)}.js"


def _script_call(function: str, *args) -> str:
    """``function(args...);`` with each argument as JSON (ASCII only, so nothing in a label
    can end the string or the script)."""
    return f"{function}({','.join(json.dumps(a, ensure_ascii=True) for a in args)});\n"


def report_files(doc: dict) -> dict[str, str]:
    """Every file of the report but the curves' PNG and ``features.json``, as ``{path
    relative to the report: text}``: ``index.html``, ``table.js`` and ``cards/f<id>.js``
    (each calls a function of report.js with its data)."""
    parts = _parts(doc)
    macros = template_environment().get_template("feature.html.j2").make_module(
        parts.context)
    shown, edges = parts.context["shown"], parts.context["edges"]
    files = {"index.html": _render_index(parts),
             TABLE_SCRIPT: _script_call("reportTable", parts.table)}
    for page in parts.pages:
        files[card_path(page["id"])] = _script_call(
            "reportCard", page["id"], str(macros.body(page, shown, edges)))
    return files


def _package_text(name: str) -> Markup:
    """A CSS or JavaScript file of the package, inlined as is: escaping would turn its
    ``>`` and ``&&`` into entities that neither language reads."""
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    end = "</" + name.rsplit(".", 1)[1].replace("js", "script").replace("css", "style")
    if end in text.lower():
        raise ValueError(f"{TEMPLATES / name} contains {end!r}, which would end its element")
    return Markup(text)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(out_dir: str | os.PathLike, doc: dict) -> Path:
    """Write ``out_dir/index.html`` with the scripts it loads (:func:`report_files`),
    ``features.json`` (its pages and numbers, for scripts and the workbench; the
    explanations are the run's ``explanations.json``) and a copy of the run's training
    curves when ``doc["curves_png"]`` names them. Returns the path of ``index.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = report_files(doc)
    # Cards of an earlier analysis would linger beside the new ones.
    cards = out / CARDS
    if cards.is_dir():
        shutil.rmtree(cards)
    cards.mkdir()
    for name, text in files.items():
        if name != "index.html":
            _write_text(out / name, text)
    _write_text(out / "index.html", files["index.html"])  # last: it names the others
    if doc.get("curves_png"):
        shutil.copyfile(doc["curves_png"], out / "curves.png")
    # The full table and the explanations of every feature stay out: the table is in
    # table.js, the explanations in the run's explanations.json (74 MB here would copy it
    # for a 24,576-feature SAE); the absorption is the run's absorption.json.
    write_json(out / "features.json",
               {k: v for k, v in doc.items()
                if k not in ("features", "explanations", "absorption")}, indent=None)
    return out / "index.html"
