// The gateway dashboard's charts: each <figure class="chart"> holds a table of its numbers, drawn here as
// SVG. Values are read from data-value attributes and every text is set with textContent: nothing from the
// page is ever parsed as HTML.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";

  function node(tag, attrs, text) {
    const element = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      element.setAttribute(name, String(value));
    }
    if (text !== undefined) {
      element.textContent = text;
    }
    return element;
  }

  function readTable(figure) {
    const table = figure.querySelector("table.data");
    const heads = Array.from(table.tHead.rows[0].cells);
    const columns = heads.slice(1).map((cell, index) => ({
      index: index,
      key: cell.dataset.series,
      role: cell.dataset.role,
      label: cell.textContent,
    }));
    const rows = Array.from(table.tBodies[0].rows).map((row) => ({
      label: row.cells[0].textContent,
      values: Array.from(row.cells).slice(1).map((cell) =>
        cell.dataset.value === undefined ? null : Number(cell.dataset.value)),
      texts: Array.from(row.cells).slice(1).map((cell) => cell.textContent),
    }));
    return { xTitle: heads[0].textContent, columns: columns, rows: rows };
  }

  function niceStep(span) {
    const raw = span / 4;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const factor of [1, 2, 2.5, 5, 10]) {
      if (raw <= factor * magnitude) {
        return factor * magnitude;
      }
    }
    return 10 * magnitude;
  }

  function formatTick(value, unit) {
    if (value === 0) {
      return "0";
    }
    if (unit === "USD") {
      if (value >= 100) {
        return "$" + value.toFixed(0);
      }
      if (value >= 1) {
        return "$" + value.toFixed(2);
      }
      return "$" + Number(value.toPrecision(2)).toString();
    }
    if (value >= 1e6) {
      return (value / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
    }
    if (value >= 1e3) {
      return (value / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
    }
    return String(Math.round(value * 100) / 100);
  }

  function shortLabel(label) {
    return /^\d{4}-\d{2}-\d{2}$/.test(label) ? label.slice(5) : label.replace(/^turn /, "");
  }

  function draw(figure) {
    const area = figure.querySelector(".chart-area");
    const data = readTable(figure);
    const unit = figure.dataset.unit;
    const stacks = data.columns.filter((column) => column.role === "stack");
    const overlays = data.columns.filter((column) => column.role === "overlay");
    const width = Math.max(280, Math.floor(area.clientWidth || 640));
    const height = width < 520 ? 220 : 280;
    const margin = { left: 80, right: 12, top: 14, bottom: 46 };
    const plotWidth = width - margin.left - margin.right;
    const plotHeight = height - margin.top - margin.bottom;
    const chart = node("svg", {
      width: width, height: height, viewBox: "0 0 " + width + " " + height, class: "chart-svg",
    });
    if (data.rows.length === 0) {
      chart.appendChild(node("text", { x: width / 2, y: height / 2, class: "empty", "text-anchor": "middle" },
        figure.dataset.empty || "No data."));
      area.replaceChildren(chart);
      figure.dataset.drawn = "true";
      return;
    }
    let max = 0;
    for (const row of data.rows) {
      const stacked = stacks.reduce((sum, column) => sum + Math.max(0, row.values[column.index] || 0), 0);
      const overlaid = overlays.reduce((top, column) => Math.max(top, row.values[column.index] || 0), 0);
      max = Math.max(max, stacked, overlaid);
    }
    const step = max > 0 ? niceStep(max) : 1;
    const top = max > 0 ? Math.ceil(max / step) * step : 1;
    const y = (value) => margin.top + plotHeight - (value / top) * plotHeight;

    for (let tick = 0; tick <= top + step / 1e6; tick += step) {
      chart.appendChild(node("line", {
        x1: margin.left, x2: width - margin.right, y1: y(tick), y2: y(tick), class: "grid",
      }));
      chart.appendChild(node("text", {
        x: margin.left - 6, y: y(tick) + 4, "text-anchor": "end", class: "tick",
      }, formatTick(tick, unit)));
    }
    const yTitleX = 12;
    const yTitleY = margin.top + plotHeight / 2;
    chart.appendChild(node("text", {
      x: yTitleX, y: yTitleY, transform: "rotate(-90 " + yTitleX + " " + yTitleY + ")",
      "text-anchor": "middle", class: "axis-title",
    }, unit));

    const band = plotWidth / data.rows.length;
    const barWidth = Math.max(2, band * 0.72);
    const labelEvery = Math.max(1, Math.ceil(data.rows.length / Math.max(1, Math.floor(plotWidth / 52))));
    data.rows.forEach((row, rowIndex) => {
      const x = margin.left + rowIndex * band + (band - barWidth) / 2;
      let base = 0;
      for (const column of stacks) {
        const value = Math.max(0, row.values[column.index] || 0);
        if (value > 0) {
          const rect = node("rect", {
            x: x, y: y(base + value), width: barWidth, height: y(base) - y(base + value),
            class: "bar s-" + column.key,
          });
          rect.appendChild(node("title", {}, row.label + " · " + column.label + ": " + row.texts[column.index]));
          chart.appendChild(rect);
        }
        base += value;
      }
      for (const column of overlays) {
        const value = row.values[column.index] || 0;
        if (value > 0) {
          const rect = node("rect", {
            x: x + 1, y: y(value), width: Math.max(1, barWidth - 2), height: y(0) - y(value),
            class: "overlay s-" + column.key,
          });
          rect.appendChild(node("title", {}, row.label + " · " + column.label + ": " + row.texts[column.index]));
          chart.appendChild(rect);
        }
      }
      if (rowIndex % labelEvery === 0) {
        chart.appendChild(node("text", {
          x: margin.left + rowIndex * band + band / 2, y: margin.top + plotHeight + 16,
          "text-anchor": "middle", class: "tick",
        }, shortLabel(row.label)));
      }
    });
    chart.appendChild(node("line", {
      x1: margin.left, x2: width - margin.right, y1: y(0), y2: y(0), class: "axis",
    }));
    chart.appendChild(node("text", {
      x: margin.left + plotWidth / 2, y: height - 6, "text-anchor": "middle", class: "axis-title",
    }, data.xTitle));
    area.replaceChildren(chart);
    figure.dataset.drawn = "true";
  }

  function drawAll() {
    document.querySelectorAll("figure.chart").forEach(draw);
  }

  let pending = null;
  window.addEventListener("resize", () => {
    if (pending !== null) {
      window.clearTimeout(pending);
    }
    pending = window.setTimeout(drawAll, 150);
  });
  drawAll();
})();
