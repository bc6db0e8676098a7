/* Analytics charts (Chart.js, vendored under static/vendor/chartjs): every <canvas data-chart="slug">
   is drawn from the page's #analytics-charts JSON (figure slug -> {type, labels, datasets}). */
(function () {
  function draw() {
    var node = document.getElementById("analytics-charts");
    if (!node || typeof Chart === "undefined") return;
    var charts = JSON.parse(node.textContent);
    var palette = ["#3b5bdb", "#2b8a3e", "#f08c00", "#c2255c", "#7048e8", "#0c8599"];
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var spec = charts[canvas.getAttribute("data-chart")];
      if (!spec || !spec.datasets) return;
      var money = spec.datasets.some(function (d) { return d.axis === "y1"; });
      var datasets = spec.datasets.map(function (d, i) {
        var color = palette[i % palette.length];
        return {
          label: d.label, data: d.data, yAxisID: d.axis || "y",
          borderColor: color, backgroundColor: spec.type === "doughnut" ? palette : color,
          tension: 0.25, pointRadius: 0, borderWidth: 2
        };
      });
      var scales = {};
      if (spec.type !== "doughnut") {
        scales.y = { beginAtZero: true, position: "left" };
        if (money) scales.y1 = { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } };
      }
      new Chart(canvas, {
        type: spec.type,
        data: { labels: spec.labels, datasets: datasets },
        options: { maintainAspectRatio: false, animation: false, interaction: { mode: "index", intersect: false }, scales: scales }
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw); else draw();
})();
