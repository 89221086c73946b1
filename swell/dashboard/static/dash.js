// Swell dashboard: refreshes the live fragments, sends edits with the CSRF token,
// follows events and logs as server-sent events. Hand-written, no dependencies.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const REFRESH_MS = 2000;

  function refresh(el) {
    if (document.hidden) return;
    fetch(el.dataset.src, { credentials: "same-origin" }).then(function (r) {
      if (r.status === 401) { location.href = "/"; return null; }
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (html !== null && html !== el.innerHTML) el.innerHTML = html;
    }).catch(function () {});
  }
  document.querySelectorAll(".live[data-src]").forEach(function (el) {
    setInterval(function () { refresh(el); }, REFRESH_MS);
  });

  const root = document.getElementById("deployment");
  if (!root) return;
  const api = root.dataset.api;

  function send(method, url, body) {
    const init = { method: method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (r) {
      return r.text().then(function (t) {
        let data = null;
        try { data = JSON.parse(t); } catch (e) { data = { error: t }; }
        return { status: r.status, data: data };
      });
    });
  }

  function describe(res) {
    const d = res.data || {};
    if (res.status < 300) return d.status ? d.status : "done";
    const lines = [String(res.status) + " " + (d.error || "error") + (d.reason ? ": " + d.reason : "")];
    (d.detail || []).forEach(function (f) {
      lines.push(f.field + " = " + JSON.stringify(f.value) + ": " + f.allowed);
    });
    return lines.join("\n");
  }

  root.querySelectorAll("button[data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      const out = document.getElementById("action-result");
      const action = button.dataset.action;
      out.textContent = action + "…";
      send("POST", api + "/" + action, action === "promote" ? {} : undefined).then(function (res) {
        out.className = "result " + (res.status < 300 ? "ok" : "bad");
        out.textContent = action + ": " + describe(res);
        refresh(document.getElementById("live"));
      });
    });
  });

  function parseValue(text) {
    const t = text.trim();
    if (t === "" || t === "null") return null;
    if (t === "true" || t === "false") return t === "true";
    if (/^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(t)) return Number(t);
    if (t[0] === "[" || t[0] === "{") { try { return JSON.parse(t); } catch (e) { return t; } }
    return t;
  }

  const form = document.getElementById("settings");
  if (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      const out = document.getElementById("settings-result");
      const body = {};
      form.querySelectorAll("input[name]").forEach(function (input) {
        if (input.value !== input.dataset.original) body[input.name] = parseValue(input.value);
      });
      send("PATCH", api + "/autoscaling_settings", body).then(function (res) {
        out.className = "result " + (res.status < 300 ? "ok" : "bad");
        out.textContent = describe(res);
        if (res.status < 300 && res.data.settings) {
          Object.keys(res.data.settings).forEach(function (name) {
            const input = form.querySelector('input[name="' + name + '"]');
            const v = res.data.settings[name];
            if (input) { input.value = v === null ? "" : (typeof v === "object" ? JSON.stringify(v) : String(v)); input.dataset.original = input.value; }
          });
          out.textContent += " (applied)";
        }
      });
    });
  }

  function cell(tag, text) {
    const el = document.createElement(tag);
    el.textContent = text === null || text === undefined ? "–" : String(text);
    return el;
  }

  function effectTable(effect) {
    const table = document.createElement("table");
    const current = (effect && effect.current) || {};
    const recommended = (effect && effect.recommended) || {};
    const head = document.createElement("tr");
    ["", "now", "with this change"].forEach(function (t) { head.appendChild(cell("th", t)); });
    table.appendChild(head);
    Object.keys(current).forEach(function (metric) {
      const row = document.createElement("tr");
      row.appendChild(cell("td", metric));
      row.appendChild(cell("td", current[metric]));
      row.appendChild(cell("td", recommended[metric]));
      table.appendChild(row);
    });
    return table;
  }

  const adviseButton = document.getElementById("advise");
  if (adviseButton) {
    adviseButton.addEventListener("click", function () {
      const box = document.getElementById("advice");
      box.textContent = "running swell advise…";
      adviseButton.disabled = true;
      send("POST", adviseButton.dataset.url).then(function (res) {
        adviseButton.disabled = false;
        box.textContent = "";
        if (res.status !== 200) { box.appendChild(cell("p", describe(res))).className = "error"; return; }
        const findings = res.data.findings || [];
        if (!findings.length) box.appendChild(cell("p", res.data.summary || "No findings: the settings suit this traffic."));
        findings.forEach(function (f) {
          const div = document.createElement("div");
          div.className = "finding";
          div.dataset.finding = f.id;
          div.appendChild(cell("h3", f.title));
          div.appendChild(cell("p", f.why));
          div.appendChild(effectTable(f.effect));
          const apply = cell("button", "Apply " + JSON.stringify(f.recommended));
          const out = cell("pre", "");
          out.className = "result";
          apply.addEventListener("click", function () {
            send("PATCH", api + "/autoscaling_settings", f.recommended).then(function (r) {
              out.className = "result " + (r.status < 300 ? "ok" : "bad");
              out.textContent = describe(r) + (r.status < 300 ? " (applied)" : "");
            });
          });
          div.appendChild(apply);
          div.appendChild(out);
          box.appendChild(div);
        });
      });
    });
  }

  function follow(url, onItem, element, unavailable) {
    if (!window.EventSource) return;
    const source = new EventSource(url);
    let opened = false;
    source.onopen = function () { opened = true; };
    source.onmessage = function (msg) {
      let item;
      try { item = JSON.parse(msg.data); } catch (e) { return; }
      if (item && Object.keys(item).length) onItem(item);
    };
    source.onerror = function () {
      if (!opened && source.readyState === EventSource.CLOSED) element.textContent = unavailable;
    };
    window.addEventListener("pagehide", function () { source.close(); });
  }

  const events = document.getElementById("events");
  let firstEvent = true;
  follow(api + "/events?follow=true", function (ev) {
    if (firstEvent) { events.textContent = ""; firstEvent = false; }
    const li = document.createElement("li");
    li.className = "event " + ev.kind;
    li.dataset.kind = ev.kind;
    li.textContent = ev.time + "  " + ev.kind + ": " + ev.message;
    events.insertBefore(li, events.firstChild);
    while (events.children.length > 200) events.removeChild(events.lastChild);
  }, events, "This server does not record events.");

  const logs = document.getElementById("logs");
  follow(api + "/logs?follow=true&limit=200", function (line) {
    logs.textContent += line.time + " " + (line.replica || "server") + " " + line.stream + " " + line.text + "\n";
    const lines = logs.textContent.split("\n");
    if (lines.length > 500) logs.textContent = lines.slice(-500).join("\n");
    logs.scrollTop = logs.scrollHeight;
  }, logs, "This server does not keep replica logs.");
})();
