/* Partner portal home: pipeline and earnings charts (Chart.js, vendored under static/vendor/chartjs). */
(function () {
  var node = document.getElementById("portal-chart-data");
  if (!node || typeof Chart === "undefined") return;
  var data = JSON.parse(node.textContent);
  var pipeline = document.getElementById("pipeline-chart");
  if (pipeline) {
    new Chart(pipeline, {
      type: "bar",
      data: { labels: data.pipeline.labels, datasets: [{ label: "Deals", data: data.pipeline.counts, backgroundColor: "#3b5bdb" }] },
      options: { maintainAspectRatio: false, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }
    });
  }
  var earnings = document.getElementById("earnings-chart");
  var currencies = Object.keys(data.earnings);
  if (earnings) {
    new Chart(earnings, {
      type: "bar",
      data: {
        labels: ["Pending", "Approved", "Paid"],
        datasets: currencies.map(function (currency, index) {
          return { label: currency, data: data.earnings[currency].map(function (minor) { return minor / Math.pow(10, data.exponents[currency]); }),
                   backgroundColor: ["#3b5bdb", "#2b8a3e", "#f08c00"][index % 3] };
        })
      },
      options: { maintainAspectRatio: false, scales: { y: { beginAtZero: true } } }
    });
  }
})();
