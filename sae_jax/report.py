"""The static HTML feature browser: ``DIR/report/index.html``.

Opens straight from disk (no server, no network): inline CSS and JavaScript,
histograms as inline SVG, training curves as a PNG beside the page. It renders
the dict that :func:`sae_jax.analyze.analyse_features` builds:

- the concept-recovery table (best SAE feature vs best raw neuron per concept);
- one section per top-ranked feature (sparsity score order): activation
  histogram, top activating builds (weapon and abilities with AP), the tokens
  the feature promotes and suppresses, what the model predicts when the feature
  is set to 0 and to its maximum, and the concept it matches;
- a table of every feature; a text box and a frequency range filter both.
"""

from __future__ import annotations

import html
import os
import shutil
from pathlib import Path

from primary.vocab import AP_THRESHOLDS, STANDARD_ABILITIES
from runkit.jsonio import write_json

_ABILITY_NAMES = {
    "ink_saver_main": "Ink Saver (Main)", "ink_saver_sub": "Ink Saver (Sub)",
    "intensify_action": "Intensify Action", "quick_super_jump": "Quick Super Jump",
}


def ability_label(name: str) -> str:
    """``swim_speed_up`` -> ``Swim Speed Up`` (as the game writes it)."""
    return _ABILITY_NAMES.get(name) or name.replace("_", " ").title()


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


def _token_chips(tokens, cls: str = "") -> str:
    if not tokens:
        return '<span class="none">none</span>'
    return " ".join(f'<span class="tok {cls}">{_e(token_label(t))}</span>' for t in tokens)


def _influence_list(items) -> str:
    return "".join(f'<li><span class="tok">{_e(token_label(t))}</span> '
                   f'<span class="val">{v:+.3f}</span></li>' for t, v in items)


def _build_line(ex: dict) -> str:
    abilities = " \u00b7 ".join(f"{_e(ability_label(a))} <b>{ap}</b>" for a, ap in ex["abilities"])
    concepts = "".join(f'<span class="concept">{_e(c)}</span>' for c in ex.get("concepts", []))
    return (f'<tr><td class="act">{ex["activation"]:.3f}</td>'
            f'<td class="weapon">{_e(ex["weapon"])}</td>'
            f'<td>{abilities or "no abilities"} {concepts}</td></tr>')


def _change_cell(change: dict) -> str:
    parts = []
    if change["entered"]:
        parts.append(f'enter: {_token_chips(change["entered"], "up")}')
    if change["left"]:
        parts.append(f'leave: {_token_chips(change["left"], "down")}')
    if not parts:
        parts.append('<span class="none">top 5 unchanged</span>')
    moves = [f'{_e(token_label(t))} <span class="up">{d:+.2f}</span>' for t, d in change["rose"]]
    moves += [f'{_e(token_label(t))} <span class="down">{d:+.2f}</span>'
              for t, d in change["fell"]]
    if moves:
        parts.append('<div class="moves">p: ' + ", ".join(moves) + "</div>")
    return "<td>" + "<br>".join(parts) + "</td>"


def _steering_table(page: dict, examples_by_row: dict) -> str:
    if not page["steering"]:
        return ""
    rows = []
    for item in page["steering"]:
        ex = examples_by_row.get(item["row"])
        who = _e(ex["weapon"]) if ex else f"build {item['row']}"
        rows.append(f'<tr><td class="weapon">{who}</td><td>{_token_chips(item["before"])}</td>'
                    f'{_change_cell(item["zero"])}{_change_cell(item["max"])}</tr>')
    return ('<h4>Steering the top builds (EDIT, reconstruction error kept)</h4>'
            '<table class="steer"><tr><th>build</th><th>model top 5</th>'
            f'<th>feature set to 0</th><th>feature set to max ({page["max_act"]:.2f})</th></tr>'
            + "".join(rows) + "</table>")


def _concept_badge(page: dict) -> str:
    c = page.get("concept")
    if not c:
        return ""
    star = " \u2605 best detector" if c["best_detector"] else ""
    strong = " strong" if c["f1"] >= 0.8 else ""
    # A weak best match is not a meaning: say it is only the closest concept.
    label = "concept" if c["f1"] >= 0.5 else "closest concept"
    return (f'<span class="badge{strong}">{label}: {_e(c["name"])} '
            f'(F1 {c["f1"]:.2f}, AUROC {c["auroc"]:.2f}){star}</span>')


def _rank_label(page: dict) -> str:
    if page["rank"] is not None:
        return f"#{page['rank']}"
    return '<span class="unranked">outside the 1%&ndash;30% window</span>'


def _feature_section(page: dict, edges, shown: set) -> str:
    examples_by_row = {ex["row"]: ex for ex in page["top_examples"]}
    search = " ".join([f"f{page['id']}", str(page["id"])]
                      + [token_label(t) + " " + t for t, _ in page["promoted"][:4]]
                      + ([page["concept"]["name"]] if page.get("concept") else [])).lower()
    coactive = ", ".join((f'<a href="#f{g}">#{g}</a>' if g in shown else f"#{g}") + f" {r:.0%}"
                         for g, r in page["coactive"])
    examples = "".join(_build_line(ex) for ex in page["top_examples"])
    return f"""
<section class="feature" id="f{page['id']}" data-freq="{page['frequency']:.6f}"
 data-search="{_e(search)}">
 <h3>{_rank_label(page)} &middot; feature {page['id']} {_concept_badge(page)}</h3>
 <div class="stats">score {_num(page['score'])} &middot; fires on {page['frequency']:.2%} of
  builds &middot; mean when active {page['mean_when_active']:.3f} &middot;
  max {page['max_act']:.3f}{' &middot; often fires with ' + coactive if coactive else ''}</div>
 <div class="grid">
  <div><h4>Activation histogram</h4>{histogram_svg(page['hist'], edges)}</div>
  <div><h4>Promotes</h4><ul class="infl">{_influence_list(page['promoted'])}</ul></div>
  <div><h4>Suppresses</h4><ul class="infl">{_influence_list(page['suppressed'])}</ul></div>
 </div>
 <h4>Top activating builds</h4>
 <table class="builds"><tr><th>act.</th><th>weapon</th><th>abilities (AP)</th></tr>
 {examples}</table>
 {_steering_table(page, examples_by_row)}
</section>"""


def _concept_table(concepts: dict | None, shown: set) -> str:
    if not concepts:
        return ""
    s = concepts["summary"]
    rows = []
    for r in concepts["rows"]:
        link = (f'<a href="#f{r["feature"]}">{r["feature"]}</a>' if r["feature"] in shown
                else str(r["feature"]))
        sign = "\u2212x" if r.get("neuron_sign", 1) < 0 else "+x"
        cls = ' class="recovered"' if r["sae_f1"] >= 0.8 else ""
        rows.append(f'<tr{cls}><td>{_e(r["concept"])}</td><td>{r.get("positives", "")}</td>'
                    f'<td>{link}</td><td>{r["sae_f1"]:.3f}</td><td>{r["sae_auroc"]:.3f}</td>'
                    f'<td>{r["neuron"]} ({sign})</td><td>{r["neuron_f1"]:.3f}</td>'
                    f'<td>{r.get("neuron_auroc", float("nan")):.3f}</td></tr>')
    return f"""
<section id="concepts"><h2>Concept recovery</h2>
<p>For each concept planted in the synthetic builds: the single SAE feature that detects it best
(F1 at its best threshold, AUROC) against the best single neuron of the raw pooled vector
(either sign). Recovered (F1 &ge; 0.8): <b>{s['recovered']}/{s['total']}</b>; mean F1
SAE <b>{s['mean_sae_f1']:.3f}</b> vs neuron <b>{s['mean_neuron_f1']:.3f}</b>.</p>
<table class="concepts"><tr><th>concept</th><th>builds</th><th>SAE feature</th><th>F1</th>
<th>AUROC</th><th>neuron (sign)</th><th>F1</th><th>AUROC</th></tr>
{''.join(rows)}</table></section>"""


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


def _training_block(doc: dict) -> str:
    """The run's held-out metrics and, when present, its training curves (curves.png)."""
    metrics = doc.get("metrics") or {}
    # Evaluation counts on held-out partial builds (the training distribution); the summary
    # above counts on full builds. Both use sae_jax.activity's definitions.
    names = {"fve": "variance explained", "mse": "MSE",
             "l0": "active features per evaluation input",
             "dead_fraction": "dead on the evaluation inputs",
             "dense_fraction": "dense (≥30%) on the evaluation inputs",
             "loss_recovered": "loss recovered", "steps": "SAE steps"}
    def fmt(k, v):
        if k == "steps":
            return f"{int(v)}"
        return f"{v:.1%}" if k.endswith("_fraction") else f"{v:.3g}"

    items = " &middot; ".join(f"{_e(names.get(k, k))} <b>{fmt(k, float(v))}</b>"
                              for k, v in metrics.items())
    curves = ('<details><summary>training curves</summary><img src="curves.png" '
              'alt="training curves" width="900"></details>' if doc.get("curves_png") else "")
    if not items and not curves:
        return ""
    return f'<section id="training"><h2>Training</h2><p>{items}</p>{curves}</section>'


def _feature_table(features: list, shown: set) -> str:
    rows = []
    for r in features:
        fid = r["id"]
        link = f'<a href="#f{fid}">{fid}</a>' if fid in shown else str(fid)
        rows.append(f'<tr data-freq="{r["frequency"]:.6f}" data-search="f{fid} {fid}">'
                    f'<td>{link}</td><td>{_num(r["score"])}</td>'
                    f'<td>{r["frequency"]:.2%}</td><td>{r["mean_when_active"]:.3f}</td>'
                    f'<td>{r["max_act"]:.3f}</td><td>{"yes" if r["in_window"] else ""}</td></tr>')
    return ('<details id="all"><summary>All features by score</summary>'
            '<table class="all"><tr><th>feature</th><th>score</th><th>frequency</th>'
            '<th>mean when active</th><th>max</th><th>1%&ndash;30%</th></tr>'
            + "".join(rows) + "</table></details>")


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1280px;padding:0 16px;
 color:#1d1d1f;background:#fafafa}
h1{margin:16px 0 4px}h2{margin-top:28px}h3{margin:0 0 4px}h4{margin:10px 0 4px;color:#555}
.summary{color:#444}
.controls{position:sticky;top:0;background:#fafafa;padding:8px 0;border-bottom:1px solid #ddd;
 z-index:2}
.controls input{margin-right:12px}
.controls input[type=number]{width:70px}
section.feature{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px;
 margin:12px 0}
.stats{color:#555;margin-bottom:4px}
.grid{display:grid;grid-template-columns:320px 1fr 1fr;gap:12px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #eee;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f2f2f2}
td.act{font-variant-numeric:tabular-nums;width:60px}td.weapon{white-space:nowrap;width:170px}
.tok{display:inline-block;background:#eef3fb;border-radius:3px;padding:0 4px;margin:1px 0}
.tok.up{background:#ddf4dd}.tok.down{background:#fbe0e0}
span.up{color:#15803d}span.down{color:#b91c1c}
.val{color:#666;font-variant-numeric:tabular-nums}
ul.infl{list-style:none;padding:0;margin:0}
.concept{display:inline-block;font-size:12px;background:#fff3cd;border-radius:3px;
 padding:0 4px;margin-left:4px}
.badge{font-size:13px;font-weight:normal;background:#eee;border-radius:4px;padding:1px 6px;
 margin-left:8px}
.badge.strong{background:#d1f2d1}
.none{color:#999}.moves{font-size:12px;color:#555}
svg.hist rect{fill:#4a78c2}svg.hist .axis{stroke:#888}
svg.hist .tick{font-size:10px;fill:#666}
tr.recovered td{background:#effaef}
.hidden{display:none}.unranked{color:#a15c00;font-size:14px}
"""

_JS = """
function applyFilter(){
  var q=document.getElementById('q').value.trim().toLowerCase();
  var lo=parseFloat(document.getElementById('fmin').value)/100;
  var hi=parseFloat(document.getElementById('fmax').value)/100;
  if(isNaN(lo))lo=0; if(isNaN(hi))hi=1;
  var shown=0;
  document.querySelectorAll('[data-freq]').forEach(function(el){
    var f=parseFloat(el.getAttribute('data-freq'));
    var s=el.getAttribute('data-search')||'';
    var ok=f>=lo&&f<=hi&&(q===''||s.indexOf(q)>=0);
    el.classList.toggle('hidden',!ok);
    if(ok&&el.tagName==='SECTION')shown++;
  });
  document.getElementById('count').textContent=shown;
}
document.addEventListener('DOMContentLoaded',function(){
  ['q','fmin','fmax'].forEach(function(id){
    document.getElementById(id).addEventListener('input',applyFilter);});
  applyFilter();
});
"""


def render_report(doc: dict) -> str:
    """The whole page as one HTML string."""
    pages = doc["pages"]
    shown = {p["id"] for p in pages}
    edges = doc["hist_edges"]
    run = doc.get("run") or {}
    run_line = " &middot; ".join(f"{_e(k)}: {_e(v)}" for k, v in run.items() if v is not None)
    sections = "".join(_feature_section(p, edges, shown) for p in pages)
    num_top = doc.get("num_top", len(pages))
    extras = len(pages) - num_top
    extra_note = f", then {extras} more concept detectors" if extras > 0 else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(doc.get('title', 'SAE feature browser'))}</title>
<style>{_CSS}</style><script>{_JS}</script></head>
<body>
<h1>{_e(doc.get('title', 'SAE feature browser'))}</h1>
<p class="summary">{doc['num_features']} features on {doc['d_in']}-d pooled vectors, analysed over
{doc['num_builds']} held-out full builds. {doc['num_ranked']} features fire on 1%&ndash;30% of
builds (the ranking window); on these builds {doc['dead']} never fire (dead) and
{doc['dense']} fire on 30% or more (dense); active means above 0.01.{_dead_note(doc)}
Features are ranked by mean-when-active / &radic;frequency.<br><small>{run_line}</small></p>
{_training_block(doc)}
{_concept_table(doc.get('concepts'), shown)}
<h2>Top {num_top} features{extra_note}</h2>
<div class="controls">filter <input id="q" type="search"
 placeholder="feature id, token, concept"> frequency from <input id="fmin" type="number"
 min="0" max="100" step="0.5" value="0">% to <input id="fmax" type="number" min="0" max="100"
 step="0.5" value="100">% &middot; <span id="count">{len(pages)}</span> sections shown</div>
{sections}
{_feature_table(doc['features'], shown)}
</body></html>
"""


def write_report(out_dir: str | os.PathLike, doc: dict) -> Path:
    """Write ``out_dir/index.html``, ``features.json`` (the same data, for scripts) and a
    copy of the run's training curves when ``doc["curves_png"]`` names them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.html"
    tmp = out / "index.html.tmp"
    tmp.write_text(render_report(doc), encoding="utf-8")
    os.replace(tmp, index)
    if doc.get("curves_png"):
        shutil.copyfile(doc["curves_png"], out / "curves.png")
    write_json(out / "features.json", {k: v for k, v in doc.items() if k != "features"},
               indent=None)
    return index
