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
// Order the feature sections (and the table) by a data attribute, largest first.
function sortSections(key){
  var box=document.getElementById('sections');
  var items=Array.prototype.slice.call(box.querySelectorAll('section.feature'));
  items.sort(function(a,b){
    var x=parseFloat(a.getAttribute('data-'+key)), y=parseFloat(b.getAttribute('data-'+key));
    if(isNaN(x))x=-Infinity; if(isNaN(y))y=-Infinity;
    return key==='rank'? x-y : y-x;
  });
  items.forEach(function(el){box.appendChild(el);});
}
function sortTable(th){
  var table=th.closest('table'), col=Array.prototype.indexOf.call(th.parentNode.children,th);
  var body=table.tBodies[0], rows=Array.prototype.slice.call(body.rows);
  var dir=th.getAttribute('data-dir')==='desc'?'asc':'desc';
  th.setAttribute('data-dir',dir);
  rows.sort(function(a,b){
    var x=a.cells[col].getAttribute('data-v'), y=b.cells[col].getAttribute('data-v');
    var nx=parseFloat(x), ny=parseFloat(y), c;
    if(!isNaN(nx)||!isNaN(ny)){nx=isNaN(nx)?-Infinity:nx; ny=isNaN(ny)?-Infinity:ny; c=nx-ny;}
    else c=(x||'').localeCompare(y||'');
    return dir==='desc'?-c:c;
  });
  rows.forEach(function(r){body.appendChild(r);});
}
document.addEventListener('DOMContentLoaded',function(){
  ['q','fmin','fmax'].forEach(function(id){
    document.getElementById(id).addEventListener('input',applyFilter);});
  document.getElementById('order').addEventListener('change',function(e){
    sortSections(e.target.value);});
  document.querySelectorAll('th.sortable').forEach(function(th){
    th.addEventListener('click',function(){sortTable(th);});});
  applyFilter();
});
