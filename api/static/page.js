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
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
