// The feature page's label form: saved to the run's label store through the API.
document.addEventListener('DOMContentLoaded', function () {
  var rungs = document.getElementById('rungs');
  if (rungs) rungs.addEventListener('click', function () {
    var status = document.getElementById('rungstatus');
    status.textContent = 'computing…';
    rungs.disabled = true;
    fetch('/api/features/' + rungs.getAttribute('data-feature') + '/rung_curves')
      .then(function (r) { return r.json().then(function (j) {
        if (!r.ok) throw new Error(j.error || r.statusText); return j; }); })
      .then(function (j) {
        // The SVG is made by the server (apps.analysis.report.rung_curves_svg), labels escaped.
        document.getElementById('rungsvg').innerHTML = j.svg || '<span class="none">no rung ' +
          'of any ability is legal for enough of the builds</span>';
        status.textContent = '';
      }).catch(function (err) { status.textContent = 'failed: ' + err.message; rungs.disabled = false; });
  });
  var form = document.getElementById('labelform');
  if (!form) return;
  var feature = form.getAttribute('data-feature');
  var status = document.getElementById('lstatus');
  function send(method, body) {
    status.textContent = 'saving…';
    return fetch('/api/features/' + feature + '/label', {
      method: method, headers: {'Content-Type': 'application/json'},
      body: body ? JSON.stringify(body) : undefined
    }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) throw new Error(j.error || r.statusText);
        return j;
      });
    });
  }
  form.addEventListener('submit', function (e) {
    e.preventDefault();
    send('POST', {
      name: document.getElementById('lname').value,
      category: document.getElementById('lcategory').value,
      notes: document.getElementById('lnotes').value
    }).then(function (j) { status.textContent = 'saved ' + j.label.timestamp; })
      .catch(function (err) { status.textContent = 'not saved: ' + err.message; });
  });
  var remove = document.getElementById('lremove');
  if (remove) remove.addEventListener('click', function () {
    send('DELETE').then(function () { location.reload(); })
      .catch(function (err) { status.textContent = 'not removed: ' + err.message; });
  });
});
