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
