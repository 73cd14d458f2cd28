// Live counts: the server sends every queue's counts as server-sent events; each cell marked
// data-live="<queue>|<state>" takes its new figure. No framework, no build step.
(function () {
  "use strict";
  var base = document.body.getAttribute("data-base") || "";
  var dot = document.getElementById("live");
  if (!window.EventSource || !document.querySelector("[data-live]")) {
    if (dot) dot.hidden = true;
    return;
  }
  var fmt = function (n) { return n.toLocaleString("en-US"); };
  var source = new EventSource(base + "/live");
  source.addEventListener("counts", function (e) {
    var counts;
    try { counts = JSON.parse(e.data); } catch (err) { return; }
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var key = el.getAttribute("data-live");
      if (!(key in counts)) return;
      var text = fmt(counts[key]);
      if (el.textContent !== text) {
        el.textContent = text;
        el.classList.remove("changed");
        void el.offsetWidth; // restart the highlight
        el.classList.add("changed");
      }
    });
    if (dot) { dot.className = "live on"; dot.title = "live: counts update every 2 s"; }
  });
  source.addEventListener("down", function (e) {
    if (dot) { dot.className = "live down"; dot.title = "Redis did not answer: " + e.data; }
  });
  source.onerror = function () {
    if (dot) { dot.className = "live down"; dot.title = "the dashboard is not reachable"; }
  };
})();
