// Per-device charts: uPlot over /api/device/<id>/charts, refreshed every 2 s.
(function () {
  var box = document.getElementById("charts");
  if (!box) return;
  var device = box.dataset.device;
  var plots = {};
  var colours = ["#175cd3", "#b42318", "#17803d", "#b54708", "#6941c6", "#0e7090"];

  function make(name, chart, target) {
    var series = [{}].concat(chart.series.map(function (label, i) {
      return { label: label, stroke: colours[i % colours.length], width: 1.5, spanGaps: true };
    }));
    return new uPlot({ width: 420, height: 180, series: series, axes: [{}, { size: 60 }] },
                     chart.data, target);
  }

  function refresh() {
    fetch("/api/device/" + encodeURIComponent(device) + "/charts", { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (doc) {
        Object.keys(doc.charts || {}).forEach(function (name) {
          var chart = doc.charts[name];
          var fig = document.getElementById("chart-" + name);
          if (!fig) return;
          var key = chart.series.join(",");
          var plot = plots[name];
          if (!plot || plot.key !== key) {
            if (plot) plot.plot.destroy();
            var target = fig.querySelector(".plot");
            target.innerHTML = "";
            plot = plots[name] = { key: key, plot: make(name, chart, target) };
          } else {
            plot.plot.setData(chart.data);
          }
          fig.dataset.points = String(chart.data[0].length);
          fig.querySelector(".points").textContent = chart.data[0].length + " points";
        });
      })
      .catch(function () {});
  }
  refresh();
  setInterval(refresh, 2000);
})();
