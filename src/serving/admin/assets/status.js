// edgegate status page: reads /status every few seconds and redraws. Names come from
// config files and cluster objects, so they are always written as text, never as HTML.
// Nothing is written to the console: a failed refresh shows in the page instead.
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const WARN_SECONDS = 14 * 24 * 3600;
  const $ = (id) => document.getElementById(id);
  let last = null;
  let refreshes = 0;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function cell(label, attrs, ...children) {
    return el("td", Object.assign({ "data-label": label }, attrs || {}), ...children);
  }

  function rate(value) {
    if (value === 0) return "0";
    if (value < 0.1) return value.toFixed(3);
    if (value < 10) return value.toFixed(2);
    return value.toFixed(0);
  }

  function percent(ratio) {
    if (ratio === null) return "–";
    if (ratio === 0) return "0%";
    return (ratio * 100).toFixed(ratio < 0.01 ? 2 : 1) + "%";
  }

  function duration(seconds) {
    if (seconds === null) return "–";
    if (seconds < 1) return (seconds * 1000).toFixed(seconds < 0.01 ? 2 : 0) + " ms";
    return seconds.toFixed(2) + " s";
  }

  function ago(iso) {
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (!isFinite(seconds)) return iso;
    if (seconds < 90) return seconds + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 129600) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " days ago";
  }

  function left(seconds) {
    if (seconds < 0) return "expired " + Math.ceil(-seconds / 86400) + " days ago";
    if (seconds < 86400) return "in " + Math.max(1, Math.round(seconds / 3600)) + " h";
    return "in " + Math.floor(seconds / 86400) + " days";
  }

  function matches(filter, ...names) {
    if (!filter) return true;
    return names.some((name) => String(name).toLowerCase().includes(filter));
  }

  function fill(tbody, rows, columns, empty) {
    tbody.replaceChildren(...rows);
    if (rows.length === 0) {
      tbody.append(el("tr", {}, el("td", { colspan: columns, class: "empty", text: empty })));
    }
  }

  function renderHeader(status) {
    const ready = $("ready");
    ready.textContent = status.ready ? "ready" : "not ready: " + status.not_ready_reason;
    ready.className = "badge " + (status.ready ? "ready" : "not-ready");
    $("version").textContent = "v" + status.version + " · up " + uptime(status.uptime_seconds);
    document.body.dataset.generation = String(status.config.generation);
  }

  function uptime(seconds) {
    if (seconds < 120) return seconds + " s";
    if (seconds < 7200) return Math.floor(seconds / 60) + " min";
    if (seconds < 172800) return Math.floor(seconds / 3600) + " h";
    return Math.floor(seconds / 86400) + " days";
  }

  function renderConfig(config) {
    $("generation").textContent = String(config.generation);
    $("source").replaceChildren(
      el("span", { class: "mono", text: config.source }),
      el("span", { class: "sub mono", text: config.hash.slice(0, 19) + "…", title: config.hash })
    );
    $("loaded").replaceChildren(el("span", { text: ago(config.loaded_at), title: config.loaded_at }));
    $("reloads").textContent = config.reloads_succeeded + " applied, " + config.reloads_failed + " refused";
    const box = $("last-reload");
    const reload = config.last_reload;
    const problem = $("problem");
    if (!reload) {
      box.className = "reload none";
      box.replaceChildren("No reload since start.");
      box.dataset.result = "none";
      problem.hidden = true;
      return;
    }
    box.className = "reload " + reload.result;
    box.dataset.result = reload.result;
    const when = el("span", { text: ago(reload.at), title: reload.at });
    if (reload.result === "success") {
      box.replaceChildren("Last reload (", reload.cause, ") applied ", when, ".");
      problem.hidden = true;
    } else {
      box.replaceChildren(
        "Last reload (", reload.cause, ") refused ", when, "; the previous config keeps running:",
        el("pre", { id: "reload-error", text: reload.error || "" })
      );
      problem.textContent = "The config on disk was refused: generation " + config.generation +
        " keeps running. See the configuration section.";
      problem.hidden = false;
    }
  }

  function renderListeners(listeners, filter) {
    const rows = listeners
      .filter((l) => matches(filter, l.name, l.address))
      .map((l) => el("tr", { "data-listener": l.name },
        cell("Name", {}, l.name, l.tls ? el("span", { class: "badge", text: "TLS" }) : null),
        cell("Address", { class: "mono" }, l.address),
        cell("Connections", { class: "num" }, String(l.connections)),
        cell("In flight", { class: "num" }, String(l.requests_in_flight))));
    rows.forEach((row) => {
      const badge = row.querySelector(".badge");
      if (badge) badge.before(" ");
    });
    fill($("listeners").tBodies[0], rows, 4, filter ? "No listener matches." : "No listeners.");
  }

  function renderRoutes(routes, filter, windowSeconds) {
    $("window").textContent = windowSeconds > 0
      ? "· rates over the last " + Math.round(windowSeconds) + " s"
      : "· rates after the next refresh";
    const rows = routes
      .filter((r) => matches(filter, r.name, r.source, ...r.upstreams, ...r.hosts))
      .map((r) => {
        const match = [];
        match.push(el("span", { class: "mono", text: r.paths.join(", ") }));
        match.push(el("span", { class: "sub", text: r.hosts.length ? r.hosts.join(", ") : "any host" }));
        if (r.listeners.length) match.push(el("span", { class: "sub", text: "on " + r.listeners.join(", ") }));
        const errors = el("span", { class: r.errors > 0 ? "bad" : "", text: percent(r.error_ratio) });
        if (r.errors > 0) errors.title = r.errors + " of " + r.requests + " answered 5xx";
        return el("tr", { "data-route": r.name },
          cell("Route", {},
            el("span", { text: r.name }), " ",
            el("span", { class: "badge", text: r.origin }),
            el("span", { class: "sub mono", text: r.source })),
          cell("Match", {}, el("span", {}, ...match)),
          cell("Action", {}, r.action),
          cell("Requests/s", { class: "num" }, rate(r.requests_per_second)),
          cell("Errors", { class: "num" }, errors),
          cell("p99", { class: "num" }, duration(r.p99_seconds)));
      });
    fill($("routes").tBodies[0], rows, 6, filter ? "No route matches." : "No routes.");
  }

  function renderUpstreams(upstreams, filter) {
    const blocks = [];
    for (const u of upstreams) {
      const upstreamMatches = matches(filter, u.name, u.source);
      const members = u.members.filter((m) => upstreamMatches || matches(filter, m.address));
      if (!upstreamMatches && members.length === 0) continue;
      const counts = {};
      for (const m of u.members) counts[m.state] = (counts[m.state] || 0) + 1;
      const summary = ["healthy", "unhealthy", "ejected", "draining"]
        .filter((s) => counts[s])
        .map((s) => counts[s] + " " + s)
        .join(", ") || "no members";
      const table = el("table", { class: "cards" },
        el("thead", {}, el("tr", {},
          el("th", { text: "Member" }), el("th", { text: "State" }),
          el("th", { class: "num", text: "In flight" }), el("th", { class: "num", text: "Weight" }))),
        el("tbody"));
      const rows = members.map((m) => el("tr", { "data-member": m.address, "data-state": m.state },
        cell("Member", { class: "mono" }, m.address),
        cell("State", {}, el("span", { class: "badge " + m.state, text: m.state })),
        cell("In flight", { class: "num" }, String(m.in_flight)),
        cell("Weight", { class: "num" }, String(m.weight))));
      fill(table.tBodies[0], rows, 4, "No members.");
      const features = [u.balance.replace("_", " ")];
      if (u.health_check) features.push("active checks");
      if (u.passive_health) features.push("passive health");
      blocks.push(el("div", { class: "upstream", "data-upstream": u.name },
        el("h3", {}, el("span", { text: u.name }), el("span", { class: "muted", text: summary })),
        el("span", { class: "sub", text: u.source + " · " + features.join(", ") }),
        table));
    }
    const container = $("upstreams");
    container.replaceChildren(...blocks);
    if (blocks.length === 0) {
      container.append(el("div", { class: "empty", text: filter ? "No upstream matches." : "No upstreams." }));
    }
  }

  function renderCertificates(certificates, filter) {
    const sorted = certificates.slice().sort((a, b) => a.expires_in_seconds - b.expires_in_seconds);
    const rows = sorted
      .filter((c) => matches(filter, c.listener, c.source, ...c.names))
      .map((c) => {
        const state = c.expires_in_seconds < 0 ? "expired" : c.expires_in_seconds < WARN_SECONDS ? "warn" : "";
        const expiry = el("span", { class: state === "" ? "" : "badge " + state, text: left(c.expires_in_seconds) });
        return el("tr", { "data-certificate": c.names.join(","), "data-expiry": state || "ok" },
          cell("Names", {}, el("span", { text: c.names.join(", ") }), el("span", { class: "sub mono", text: c.source })),
          cell("Listener", {}, c.listener),
          cell("Expires", {}, el("span", {}, expiry, el("span", { class: "sub", text: c.not_after }))));
      });
    fill($("certificates").tBodies[0], rows, 3, filter ? "No certificate matches." : "No certificates.");
  }

  function render() {
    if (!last) return;
    const filter = $("filter").value.trim().toLowerCase();
    renderHeader(last);
    renderConfig(last.config);
    renderListeners(last.listeners, filter);
    renderRoutes(last.routes, filter, last.window_seconds);
    renderUpstreams(last.upstreams, filter);
    renderCertificates(last.certificates, filter);
  }

  function showFailure(reason) {
    const updated = $("updated");
    updated.textContent = "refresh failed (" + reason + "); retrying";
    updated.classList.add("bad");
  }

  async function refresh() {
    try {
      const response = await fetch("/status", { cache: "no-store", headers: { accept: "application/json" } });
      if (!response.ok) {
        showFailure("HTTP " + response.status);
      } else {
        last = await response.json();
        refreshes += 1;
        render();
        const updated = $("updated");
        updated.classList.remove("bad");
        updated.textContent = "updated " + new Date().toLocaleTimeString();
        document.body.dataset.refreshes = String(refreshes);
      }
    } catch (error) {
      showFailure(error && error.message ? error.message : "unreachable");
    }
    setTimeout(refresh, REFRESH_MS);
  }

  $("filter").addEventListener("input", render);
  refresh();
})();
