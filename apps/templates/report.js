function applyFilter(){
  var q=document.getElementById('q').value.trim().toLowerCase();
  var lo=parseFloat(document.getElementById('fmin').value)/100;
  var hi=parseFloat(document.getElementById('fmax').value)/100;
  if(isNaN(lo))lo=0; if(isNaN(hi))hi=1;
  var shown=0;
  document.querySelectorAll('#sections>.feature[data-freq]').forEach(function(el){
    var f=parseFloat(el.getAttribute('data-freq'));
    var s=el.getAttribute('data-search')||'';
    var ok=f>=lo&&f<=hi&&(q===''||s.indexOf(q)>=0);
    el.classList.toggle('hidden',!ok);
    if(ok)shown++;
  });
  document.getElementById('count').textContent=shown;
  table.filter={q:q,lo:lo,hi:hi};
  drawTable(true);
}
// Cards and the table's rows are scripts beside the page (cards/f<id>.js, table.js), added
// when wanted: from file:// a page may load scripts but not fetch() files.
function loadScript(src,where){
  var s=document.createElement('script');
  s.src=src;
  s.onerror=function(){where.textContent='could not load '+src+
    ': the report\'s files must stay beside its index.html';};
  document.head.appendChild(s);
}
function loadCard(el){
  if(el.getAttribute('data-state'))return;
  el.setAttribute('data-state','loading');
  loadScript(el.getAttribute('data-card'),el.querySelector('.card'));
}
// Called by cards/f<id>.js with the card's body.
function reportCard(id,html){
  var el=document.getElementById('f'+id);
  if(!el)return;
  el.querySelector('.card').innerHTML=html;
  el.setAttribute('data-state','loaded');
}
// Open the card the address names (#f<id>), from a link or on arrival.
function openFromHash(){
  var el=location.hash.length>1&&document.getElementById(location.hash.slice(1));
  if(!el||el.tagName!=='DETAILS'||!el.classList.contains('feature'))return;
  el.open=true;
  loadCard(el);
  el.scrollIntoView();
}
// The all-features table: rows [id, label, explanation, F1, score, frequency, mean when
// active, max, in window (1/0), has a section (1/0), frequency as shown], drawn TABLE_PAGE
// at a time; table.js calls reportTable with them.
var TABLE_PAGE=500;
var table={rows:[],view:[],limit:TABLE_PAGE,filter:{q:'',lo:0,hi:1},col:-1,dir:'desc'};
function reportTable(rows){
  table.rows=rows;
  drawTable(true);
}
function fmt(x,digits){
  if(x===null||x===undefined)return '';
  return Math.abs(x)<1e4?String(Number(x.toPrecision(digits))):x.toExponential(digits-1);
}
function rowHtml(r){
  var num='</td><td class="num">';
  return '<tr><td>'+(r[9]?'<a href="#f'+r[0]+'">'+r[0]+'</a>':String(r[0]))+'</td><td>'+
    esc(r[1])+'</td><td>'+esc(r[2])+num+(r[3]===null?'':r[3].toFixed(2))+num+fmt(r[4],3)+
    num+esc(r[10])+num+r[6].toFixed(3)+num+r[7].toFixed(3)+'</td><td>'+
    (r[8]?'yes':'')+'</td></tr>';
}
function esc(s){
  return String(s).replace(/&/g,'&amp;').replace(/</g,'&lt;').replace(/>/g,'&gt;')
    .replace(/"/g,'&quot;');
}
function drawTable(reset){
  var f=table.filter, body=document.querySelector('#all-table tbody');
  if(!body)return;
  if(reset){
    table.limit=TABLE_PAGE;
    table.view=table.rows.filter(function(r){
      if(r[5]<f.lo||r[5]>f.hi)return false;
      return f.q===''||('f'+r[0]+' '+r[0]+' '+r[1]+' '+r[2]).toLowerCase().indexOf(f.q)>=0;
    });
    if(table.col>=0){
      var c=table.col, sign=table.dir==='desc'?-1:1;
      table.view.sort(function(a,b){
        var x=a[c], y=b[c];
        if(typeof x==='string'||typeof y==='string')return sign*String(x||'').localeCompare(String(y||''));
        x=(x===null)?-Infinity:x; y=(y===null)?-Infinity:y;
        return sign*(x-y);
      });
    }
  }
  var html=[], n=Math.min(table.limit,table.view.length);
  for(var i=0;i<n;i++){
    html.push(rowHtml(table.view[i]));
  }
  body.innerHTML=html.join('');
  document.getElementById('table-count').textContent=n+' of '+table.view.length+
    ' matching features ('+table.rows.length+' in all)';
  document.getElementById('table-more').classList.toggle('hidden',n>=table.view.length);
}
// Order the feature rows by a data attribute, largest first (rank: smallest first).
function sortSections(key){
  var box=document.getElementById('sections');
  var items=Array.prototype.slice.call(box.querySelectorAll(':scope>.feature'));
  items.sort(function(a,b){
    var x=parseFloat(a.getAttribute('data-'+key)), y=parseFloat(b.getAttribute('data-'+key));
    if(isNaN(x))x=-Infinity; if(isNaN(y))y=-Infinity;
    return key==='rank'? x-y : y-x;
  });
  items.forEach(function(el){box.appendChild(el);});
}
function sortTable(th){
  var col=parseInt(th.getAttribute('data-col'),10);
  table.dir=(table.col===col&&table.dir==='desc')?'asc':'desc';
  table.col=col;
  drawTable(true);
}
document.addEventListener('DOMContentLoaded',function(){
  document.querySelectorAll('#sections details.feature').forEach(function(el){
    el.addEventListener('toggle',function(){if(el.open)loadCard(el);});});
  var all=document.getElementById('all');
  if(all)all.addEventListener('toggle',function(){
    if(!all.open||all.getAttribute('data-state'))return;
    all.setAttribute('data-state','loading');
    loadScript(all.getAttribute('data-table'),document.getElementById('table-count'));
  });
  window.addEventListener('hashchange',openFromHash);
  var more=document.getElementById('table-more');
  if(more)more.addEventListener('click',function(){table.limit+=TABLE_PAGE;drawTable(false);});
  ['q','fmin','fmax'].forEach(function(id){
    document.getElementById(id).addEventListener('input',applyFilter);});
  document.getElementById('order').addEventListener('change',function(e){
    sortSections(e.target.value);});
  document.querySelectorAll('th.sortable').forEach(function(th){
    th.addEventListener('click',function(){sortTable(th);});});
  applyFilter();
  openFromHash();
});
