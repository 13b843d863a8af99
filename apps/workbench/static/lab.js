// The build lab: a partial build and feature edits in, the completion out (POST /api/complete).
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var abilityNames = {}, previous = null, timer = null, seq = 0;

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c];
    });
  }
  function label(a) { return abilityNames[a] || a; }

  function abilityBox(a) {
    var box = document.createElement('div');
    box.className = 'ability';
    box.setAttribute('data-ability', a.name);
    box.innerHTML = '<span title="click: add or remove a main (10 AP)">' + esc(a.label) +
      '</span><input type="number" min="0" max="57" step="1" value="0" aria-label="' +
      esc(a.label) + ' AP">';
    var input = box.querySelector('input');
    box.querySelector('span').addEventListener('click', function () {
      input.value = (parseInt(input.value, 10) || 0) > 0 ? 0 : 10;
      changed();
    });
    input.addEventListener('change', changed);
    return box;
  }

  function addEdit(feature, value) {
    var row = document.createElement('div');
    row.className = 'edit';
    row.innerHTML = 'feature <input type="number" min="0" step="1" class="efeature"> = ' +
      '<input type="number" step="any" class="evalue"> <button type="button">remove</button>';
    row.querySelector('.efeature').value = feature === undefined ? '' : feature;
    row.querySelector('.evalue').value = value === undefined ? 0 : value;
    row.querySelector('button').addEventListener('click', function () { row.remove(); changed(); });
    row.querySelectorAll('input').forEach(function (i) { i.addEventListener('change', changed); });
    $('edits').appendChild(row);
  }

  function request() {
    var abilities = {};
    document.querySelectorAll('.ability').forEach(function (box) {
      var v = parseInt(box.querySelector('input').value, 10) || 0;
      box.classList.toggle('on', v > 0);
      if (v > 0) abilities[box.getAttribute('data-ability')] = v;
    });
    var edits = [];
    document.querySelectorAll('.edit').forEach(function (row) {
      var f = row.querySelector('.efeature').value, v = row.querySelector('.evalue').value;
      if (f !== '') edits.push({feature: parseInt(f, 10), value: parseFloat(v || '0')});
    });
    return {weapon: parseInt($('weapon').value, 10), abilities: abilities, edits: edits};
  }

  function changed() { clearTimeout(timer); timer = setTimeout(complete, 250); }

  // The build as a table of pieces; with a diff, its slots as the diff lines them up (subs
  // an ability kept stay in place) and the changed ones marked.
  function pieces(build, diff) {
    var rows = build.pieces.map(function (p) {
      return {piece: p.piece, cells: [p.main].concat(p.subs).map(function (a) {
        return {after: a, changed: false}; })};
    });
    if (diff) {
      rows = [];
      diff.slots.forEach(function (s) {
        if (!rows.length || rows[rows.length - 1].piece !== s.piece) rows.push({piece: s.piece, cells: []});
        rows[rows.length - 1].cells.push(s);
      });
    }
    var h = '<div class="scroll"><table class="piece" id="buildtable"><thead><tr><th>piece</th>' +
      '<th>main</th><th>sub 1</th><th>sub 2</th><th>sub 3</th></tr></thead><tbody>';
    rows.forEach(function (r) {
      h += '<tr><td>' + esc(r.piece) + '</td>' + r.cells.map(function (c) {
        return '<td' + (c.changed ? ' class="changed" title="was ' + esc(label(c.before)) + '"' : '') +
          '>' + esc(label(c.after)) + (c.changed ? '<br><s class="moves">' + esc(label(c.before)) +
          '</s>' : '') + '</td>';
      }).join('') + '</tr>';
    });
    h += '</tbody></table></div><div class="moves">AP: ' + Object.keys(build.ap).sort(
      function (a, b) { return build.ap[b] - build.ap[a]; }).map(function (a) {
        return esc(label(a)) + ' <b>' + build.ap[a] + '</b>';
      }).join(' &middot; ') + '</div>';
    return h;
  }

  function render(res) {
    $('build').className = '';
    $('build').innerHTML = '<div class="moves">' + esc(res.build.weapon_name) + ', score ' +
      res.build.score.toFixed(2) + (res.edits.length ? ' (steered: ' + res.edits.map(function (e) {
        return 'feature ' + e.feature + ' = ' + e.value; }).join(', ') + ')' : '') + '</div>' +
      pieces(res.build, res.diff);
    $('diff').innerHTML = res.diff ? '<div class="moves" id="diffsummary">' +
      res.diff.changed_slots + ' of ' + res.diff.slots.length +
      ' slots changed by the edits (highlighted; hover for the slot as it was)' +
      (Object.keys(res.diff.ap).length ? '; AP: ' + Object.keys(res.diff.ap).map(function (a) {
        var d = res.diff.ap[a]; return esc(label(a)) + ' ' + d.before + ' &rarr; ' + d.after;
      }).join(', ') : '') + '</div>' : '';
    $('probs').innerHTML = '<table class="all"><tbody>' + res.probabilities.map(function (p) {
      return '<tr><td>' + esc(p.label) + (p.observed ? ' <span class="moves">(given)</span>' : '') +
        '</td><td class="num">' + p.p.toFixed(3) + '</td><td><span class="pbar" style="width:' +
        Math.round(100 * p.p) + 'px"></span></td></tr>';
    }).join('') + '</tbody></table>';
    $('active').innerHTML = res.active_features.length ? '<table class="all" id="activetable">' +
      '<thead><tr><th>feature</th><th>activation</th><th title="activation &times; logit influence, summed over the tokens the completion added">push on added</th>' +
      '<th>promotes</th><th>explanation</th><th></th></tr></thead><tbody>' +
      res.active_features.map(function (f) {
        var edited = Math.abs(f.activation - f.unedited) > 1e-6;
        return '<tr data-feature="' + f.feature + '"><td><a href="/feature/' + f.feature + '">' +
          f.feature + '</a>' + (f.label ? ' <span class="label">' + esc(f.label) + '</span>' : '') +
          '</td><td class="num">' + f.activation.toFixed(3) + (edited ? ' <span class="moves">(was ' +
          f.unedited.toFixed(3) + ')</span>' : '') + '</td><td class="num">' +
          f.contribution.toFixed(3) + '</td><td>' + f.promotes.map(function (t) {
            return '<span class="tok">' + esc(t.label) + '</span>'; }).join(' ') + '</td><td>' +
          esc(f.explanation) + '</td><td><button type="button" class="zero">set to 0</button></td></tr>';
      }).join('') + '</tbody></table>' : '<span class="none">no feature is active</span>';
    document.querySelectorAll('#activetable button.zero').forEach(function (b) {
      b.addEventListener('click', function () {
        addEdit(b.closest('tr').getAttribute('data-feature'), 0); complete();
      });
    });
    showChanges(res.active_features);
  }

  function showChanges(active) {
    var now = {};
    active.forEach(function (f) { now[f.feature] = f.activation; });
    if (previous) {
      var parts = [];
      Object.keys(now).forEach(function (f) {
        if (!(f in previous)) parts.push('<span class="up">+' + f + '</span>');
        else if (Math.abs(now[f] - previous[f]) > 0.05) parts.push(f + ' ' +
          previous[f].toFixed(2) + '&rarr;' + now[f].toFixed(2));
      });
      Object.keys(previous).forEach(function (f) {
        if (!(f in now)) parts.push('<span class="down">&minus;' + f + '</span>');
      });
      $('changes').innerHTML = parts.length ? 'features: ' + parts.join(', ') : 'no feature changed';
    }
    previous = now;
  }

  // The number of the last request shown (for scripts and tests that wait on the page).
  function answered(n) { document.body.setAttribute('data-answered', n); }

  function complete() {
    var mine = ++seq;
    $('busy').textContent = 'computing…';
    $('error').textContent = '';
    fetch('/api/complete', {method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify(request())}).then(function (r) {
      return r.json().then(function (j) { if (!r.ok) throw new Error(j.error || r.statusText); return j; });
    }).then(function (res) {
      if (mine !== seq) return;
      render(res);
      $('busy').textContent = '';
      answered(mine);
    }).catch(function (err) {
      if (mine !== seq) return;
      $('busy').textContent = '';
      $('error').textContent = err.message;
      answered(mine);
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    fetch('/api/lab').then(function (r) { return r.json(); }).then(function (choices) {
      $('weapon').innerHTML = choices.weapons.map(function (w) {
        return '<option value="' + w.id + '">' + esc(w.name) + '</option>';
      }).join('') + (choices.other_weapons && choices.other_weapons.length ?
        '<optgroup label="not known to this model">' + choices.other_weapons.map(function (w) {
          return '<option value="' + w.id + '" disabled>' + esc(w.name) + '</option>';
        }).join('') + '</optgroup>' : '');
      choices.abilities.forEach(function (a) {
        abilityNames[a.name] = a.label;
        $('abilities').appendChild(abilityBox(a));
      });
      // A build to start from: ?weapon=GID&abilities=name:AP,...&feature=F&value=V
      // (the "open in the build lab" links of the feature pages).
      var params = new URLSearchParams(location.search);
      if (params.get('weapon')) $('weapon').value = params.get('weapon');
      var unknown = [];
      (params.get('abilities') || '').split(',').forEach(function (pair) {
        if (!pair) return;
        var parts = pair.split(':');
        var box = document.querySelector('.ability[data-ability="' + CSS.escape(parts[0]) + '"]');
        if (box) box.querySelector('input').value = parseInt(parts[1], 10) || 0;
        else unknown.push(parts[0]);
      });
      if (params.get('feature')) addEdit(params.get('feature'), params.get('value') || 0);
      $('weapon').addEventListener('change', changed);
      $('addedit').addEventListener('click', function () { addEdit(); });
      $('complete').addEventListener('click', complete);
      $('clear').addEventListener('click', function () {
        document.querySelectorAll('.ability input').forEach(function (i) { i.value = 0; });
        changed();
      });
      complete();
      if (unknown.length) $('error').textContent = 'abilities in the address that the lab ' +
        'does not know: ' + unknown.join(', ');
    });
  });
})();
