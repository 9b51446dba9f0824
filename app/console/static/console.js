// The operator console's own script (/console), loaded on every page with <script src="…/console.js" defer> after
// htmx.min.js and chart.umd.min.js. An external file with no eval and no inline style: the pages' Content-Security-
// Policy allows neither. Plain ES2017, no build step. Pages ask for behaviour with data-* attributes; content that
// htmx swaps in later gets the same treatment (htmx:load and htmx:afterSwap).
//
//   <canvas data-chart="URL" data-chart-label="Outcomes per hour, last 24 hours"></canvas>
//       GET URL (same origin, with the session cookie) answers
//       {"window": "24h", "hours": ["2026-12-06T15:00:00Z", …], "series": {"done": [3, …], "failed": […], …}}
//       and is drawn as a stacked bar chart, one dataset per series, hours in the browser's local time. The label
//       becomes the canvas's aria-label (role="img"). A bare canvas is wrapped in <div class="chart-box"> (its
//       height is in console.css). When the answer does not come, the canvas is replaced with
//       <p class="error" data-chart-failed="URL">The chart could not be loaded (…).</p>
//   <button type="button" data-chart-switch="URL" aria-pressed="false">7 days</button>
//       On click, points the nearest chart (the first canvas[data-chart] in the closest ancestor that holds one) at
//       URL and draws it again; this button gets aria-pressed="true", the other switches of that chart "false".
//   <form data-confirm="Pause all processing?">
//       On submit asks window.confirm(message); when refused, the submit is cancelled before htmx sees it (so put
//       hx-post on the form itself, not on its button).
//   <time datetime="2026-12-06T15:00:00Z">2026-12-06 15:00 UTC</time>
//       The text becomes the local date and time (with seconds when the element has data-seconds); title keeps the
//       ISO. A date without a time is left as it is.
"use strict";
(function () {
  var COLOURS = {
    done: "#1a7f37",
    failed: "#cf222e",
    needs_review: "#bf8700",
    retrying: "#bc4c00",
    ignored: "#8c959f",
  };
  var EXTRA_COLOURS = ["#8250df", "#0969da", "#1b7c83", "#57606a"];
  var ORDER = ["done", "failed", "needs_review", "retrying", "ignored"];
  var DATE_TIME = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
  var DATE_TIME_SECONDS = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  var HOUR = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  var DAY_HOUR = new Intl.DateTimeFormat(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" });
  var started = new WeakSet(); // canvases already asked for their data
  var latest = new WeakMap(); // canvas -> its newest request, so that a slow older answer is not drawn over it
  var failedCanvas = new WeakMap(); // the error paragraph -> the canvas it replaced (a switch brings it back)

  function each(root, selector, fn) {
    if (root.nodeType === 1 && root.matches(selector)) fn(root);
    if (root.querySelectorAll) Array.prototype.forEach.call(root.querySelectorAll(selector), fn);
  }

  function reducedMotion() {
    return window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  }

  // ---- <time datetime> -------------------------------------------------------------------------------------------
  function localTime(el) {
    var iso = el.getAttribute("datetime") || "";
    if (iso.indexOf("T") < 0) return; // a date alone is the same day everywhere
    var when = new Date(iso);
    if (isNaN(when.getTime())) return;
    el.textContent = (el.hasAttribute("data-seconds") ? DATE_TIME_SECONDS : DATE_TIME).format(when);
    if (!el.getAttribute("title")) el.setAttribute("title", iso);
  }

  // ---- charts ------------------------------------------------------------------------------------------------------
  function checked(data) {
    var hours = data && data.hours;
    var series = data && data.series;
    if (!Array.isArray(hours) || !series || typeof series !== "object") throw new Error("unexpected answer");
    Object.keys(series).forEach(function (name) {
      if (!Array.isArray(series[name]) || series[name].length !== hours.length) throw new Error("unexpected answer");
    });
    return data;
  }

  function datasets(series) {
    var names = ORDER.filter(function (n) { return n in series; });
    Object.keys(series).forEach(function (n) { if (names.indexOf(n) < 0) names.push(n); });
    return names.map(function (name, i) {
      return {
        label: name.replace(/_/g, " "),
        data: series[name],
        backgroundColor: COLOURS[name] || EXTRA_COLOURS[i % EXTRA_COLOURS.length],
        borderWidth: 0,
        stack: "outcomes",
      };
    });
  }

  function hourLabels(hours) {
    var times = hours.map(function (iso) { return new Date(iso); });
    var span = times.length ? times[times.length - 1] - times[0] : 0;
    var format = span >= 24 * 3600 * 1000 ? DAY_HOUR : HOUR;
    return times.map(function (t) { return format.format(t); });
  }

  function draw(canvas, data) {
    var old = window.Chart.getChart(canvas);
    if (old) old.destroy();
    new window.Chart(canvas, {
      type: "bar",
      data: { labels: hourLabels(data.hours), datasets: datasets(data.series) },
      options: {
        animation: reducedMotion() ? false : { duration: 300 },
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, ticks: { autoSkip: true, maxRotation: 0 } },
          y: { stacked: true, beginAtZero: true, grace: "5%", ticks: { precision: 0 } },
        },
        plugins: {
          legend: { position: "bottom" },
          tooltip: {
            callbacks: {
              title: function (items) {
                return items.length ? DATE_TIME.format(new Date(data.hours[items[0].dataIndex])) : "";
              },
            },
          },
        },
      },
    });
  }

  function fail(canvas, url, why) {
    var message = document.createElement("p");
    message.className = "error";
    message.setAttribute("data-chart-failed", url);
    message.textContent = "The chart could not be loaded" + (why ? " (" + why + ")." : ".");
    var old = window.Chart && window.Chart.getChart(canvas);
    if (old) old.destroy();
    if (canvas.parentNode && canvas.parentNode.classList.contains("chart-box")) {
      canvas.parentNode.classList.add("chart-failed");
    }
    failedCanvas.set(message, canvas);
    if (canvas.parentNode) canvas.parentNode.replaceChild(message, canvas);
  }

  async function loadChart(canvas) {
    var url = canvas.getAttribute("data-chart");
    var request = {};
    latest.set(canvas, request);
    try {
      if (!window.Chart) throw new Error("Chart.js is missing");
      var answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      var data = checked(await answer.json());
      if (latest.get(canvas) === request) draw(canvas, data);
    } catch (error) {
      if (latest.get(canvas) === request) fail(canvas, url, error instanceof SyntaxError ? "not JSON" : error.message);
    }
  }

  function startChart(canvas) {
    if (started.has(canvas)) return;
    started.add(canvas);
    var label = canvas.getAttribute("data-chart-label");
    if (label) {
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", label);
    }
    var parent = canvas.parentNode;
    if (parent && !parent.classList.contains("chart-box")) {
      var box = document.createElement("div");
      box.className = "chart-box";
      parent.insertBefore(box, canvas);
      box.appendChild(canvas);
    }
    loadChart(canvas);
  }

  function nearestChart(button) {
    for (var scope = button.parentElement; scope; scope = scope.parentElement) {
      var chart = scope.querySelector("canvas[data-chart], [data-chart-failed]");
      if (chart) return { scope: scope, chart: chart };
    }
    return null;
  }

  function switchChart(button) {
    var found = nearestChart(button);
    if (!found) return;
    var canvas = found.chart;
    if (canvas.hasAttribute("data-chart-failed")) {
      var restored = failedCanvas.get(canvas);
      if (!restored) return;
      if (canvas.parentNode.classList.contains("chart-box")) canvas.parentNode.classList.remove("chart-failed");
      canvas.parentNode.replaceChild(restored, canvas);
      canvas = restored;
    }
    each(found.scope, "[data-chart-switch]", function (other) {
      other.setAttribute("aria-pressed", other === button ? "true" : "false");
    });
    canvas.setAttribute("data-chart", button.getAttribute("data-chart-switch"));
    started.add(canvas);
    loadChart(canvas);
  }

  // ---- wiring ------------------------------------------------------------------------------------------------------
  function enhance(root) {
    each(root, "time[datetime]", localTime);
    each(root, "canvas[data-chart]", startChart);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-chart-switch]");
    if (button) {
      event.preventDefault();
      switchChart(button);
    }
  });

  // Capture phase: this runs before htmx's own submit listener on the form, so a refused form sends nothing.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute || !form.hasAttribute("data-confirm")) return;
    if (!window.confirm(form.getAttribute("data-confirm"))) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  function swapped(event) {
    var root = event.target;
    enhance(root && root.isConnected ? root : document);
  }
  document.addEventListener("htmx:load", swapped);
  document.addEventListener("htmx:afterSwap", swapped);
  // A chart htmx takes out of the page stops listening for resizes.
  document.addEventListener("htmx:beforeCleanupElement", function (event) {
    var chart = window.Chart && event.target.tagName === "CANVAS" && window.Chart.getChart(event.target);
    if (chart) chart.destroy();
  });

  function start() {
    if (window.Chart) {
      // The page's own font (console.css's system stack) and its secondary text colour, not Chart.js's Helvetica.
      window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily || window.Chart.defaults.font.family;
      window.Chart.defaults.color = "#424a53";
    }
    enhance(document);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
