// Draws the page's plotly charts from the JSON the server rendered next to each one
// (no inline script: the page's Content-Security-Policy allows scripts from this origin only).
"use strict";
(function () {
  function draw() {
    var charts = document.querySelectorAll("[data-chart]");
    for (var i = 0; i < charts.length; i++) {
      var el = charts[i];
      var spec = JSON.parse(document.getElementById(el.getAttribute("data-chart")).textContent);
      window.Plotly.newPlot(el, spec.data, spec.layout, spec.config);
    }
  }
  // The page is rendered on the server: it follows the trades by reloading itself every
  // `data-refresh-s` seconds (0: never), and only while its tab is visible.
  function scheduleReload() {
    var el = document.getElementById("auto-refresh");
    var seconds = el ? Number(el.getAttribute("data-refresh-s")) : 0;
    if (!(seconds > 0)) {
      return;
    }
    window.setTimeout(function reload() {
      if (document.hidden) {
        document.addEventListener("visibilitychange", function once() {
          document.removeEventListener("visibilitychange", once);
          reload();
        });
        return;
      }
      window.location.reload();
    }, seconds * 1000);
  }
  function start() {
    draw();
    scheduleReload();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
