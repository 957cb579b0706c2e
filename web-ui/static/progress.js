// Live install progress (server-sent events). The page works without it: it then reloads itself
// every few seconds (<noscript> meta refresh). No inline script: the CSP forbids it.
"use strict";
(function () {
  var list = document.getElementById("progress");
  if (!list || !window.EventSource) return;
  var icons = { pending: "·", running: "…", done: "✓", skipped: "–", failed: "✗" };
  var src = new EventSource(list.getAttribute("data-events"));
  src.addEventListener("progress", function (ev) {
    var p;
    try { p = JSON.parse(ev.data); } catch (e) { return; }
    p.steps.forEach(function (s) {
      var li = document.getElementById("step-" + s.key);
      if (!li) return;
      li.className = s.state;
      li.querySelector(".icon").textContent = icons[s.state] || "?";
      li.querySelector(".state").textContent = s.state;
      li.querySelector(".state").className = "state badge " + s.state;
      li.querySelector(".detail").textContent = s.detail;
    });
    if (p.finished) {
      var done = document.getElementById("finished");
      if (done) done.hidden = false;
      src.close();
    }
  });
})();
