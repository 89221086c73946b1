"""The dashboard's HTML, rendered on the server from the management API's JSON.

Plain string templates (no template engine, no build step); every value that
came from a user or a model goes through :func:`html.escape`.  The page's live
parts are fragments that ``dash.js`` fetches again and swaps in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any
from urllib.parse import quote

from swell import __version__
from swell.dashboard._charts import Sample, svg_chart

__all__ = ["deployment_fragment", "deployment_page", "index_fragment", "index_page", "signin_page"]

# The eight statuses of DESIGN.md, each with its badge colour.
BADGES = {
    "Scaled to zero": "idle",
    "Waking up": "busy",
    "Loading model": "busy",
    "Active": "ok",
    "Building": "busy",
    "Unhealthy": "bad",
    "Failed": "bad",
    "Inactive": "off",
}


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def badge(status: str) -> str:
    return f'<span class="badge {BADGES.get(status, "off")}" data-status="{e(status)}">{e(status)}</span>'


def _shell(title: str, body: str, *, csrf: str = "", signed_in: bool = False) -> str:
    signout = (
        '<form method="post" action="/ui/signout" class="signout">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}"><button type="submit">Sign out</button></form>'
        if signed_in
        else ""
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf-token" content="{e(csrf)}">'
        f"<title>{e(title)} · Swell</title>"
        '<link rel="stylesheet" href="/ui/static/dash.css"><script src="/ui/static/dash.js" defer></script>'
        "</head><body>"
        f'<header><a href="/" class="brand">Swell</a> <span class="ver">{e(__version__)}</span>'
        f'<nav><a href="/">Models</a> <a href="/docs">API docs</a></nav>{signout}</header>'
        f"<main>{body}</main></body></html>"
    )


def signin_page(message: str = "") -> str:
    note = f'<p class="error" id="signin-error">{e(message)}</p>' if message else ""
    body = (
        '<section class="signin"><h1>Sign in</h1>'
        "<p>Paste a workspace API key: the one <code>swell serve</code> printed, or one from "
        "<code>swell keys create --type workspace</code>. The browser keeps a session cookie, not the key.</p>"
        f"{note}"
        '<form method="post" action="/ui/signin"><label>API key '
        '<input type="password" name="key" id="key" autocomplete="off" required autofocus></label> '
        '<button type="submit" id="signin">Sign in</button></form></section>'
    )
    return _shell("Sign in", body)


def _env_links(model: Mapping[str, Any]) -> str:
    envs = model.get("environments") or {}
    if not envs:
        return '<span class="muted">none</span>'
    return ", ".join(
        f'{e(name)} → <a href="{_deployment_href(model["id"], dep)}">{e(dep)}</a>' if dep else f"{e(name)} → (nothing)"
        for name, dep in sorted(envs.items())
    )


def _deployment_href(model_id: str, deployment_id: str) -> str:
    return f"/ui/models/{quote(model_id, safe='')}/deployments/{quote(deployment_id, safe='')}"


def index_fragment(models: Iterable[Mapping[str, Any]]) -> str:
    rows = []
    for model in models:
        deployments = model.get("deployments") or []
        rows.append(
            f'<tr class="model" data-model="{e(model["id"])}"><th colspan="5">{e(model["name"])} '
            f'<span class="muted">{e(model["id"])}</span> · environments: {_env_links(model)}</th></tr>'
        )
        if not deployments:
            rows.append('<tr><td colspan="5" class="muted">no deployments</td></tr>')
        for d in deployments:
            # the share of each environment it takes (a rolling promotion splits one: "production 10%")
            shares = d.get("traffic") or dict.fromkeys(d.get("environments") or [], 100)
            envs = ", ".join(name if share >= 100 else f"{name} {share}%" for name, share in shares.items()) or "—"
            rows.append(
                f'<tr class="deployment" data-deployment="{e(d["id"])}">'
                f'<td><a href="{_deployment_href(d["model_id"], d["id"])}">{e(d["id"])}</a></td>'
                f"<td>{e(d['kind'])}</td><td>{badge(d['status'])}</td>"
                f'<td class="replicas">{e(d["replicas_ready"])}/{e(d["replicas_total"])}</td><td>{e(envs)}</td></tr>'
            )
    if not rows:
        return '<p class="muted">No models yet: push one with <code>swell push DIR</code>.</p>'
    return (
        '<table class="models"><thead><tr><th>deployment</th><th>kind</th><th>status</th>'
        "<th>replicas ready/total</th><th>environments</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def index_page(models: Iterable[Mapping[str, Any]], csrf: str) -> str:
    body = (
        '<h1>Models</h1><div class="live" data-src="/ui/fragment/index" id="models">'
        f"{index_fragment(models)}</div>"
    )
    return _shell("Models", body, csrf=csrf, signed_in=True)


def _cold_start(value: Mapping[str, Any] | None) -> str:
    if not value:
        return "—"
    return ", ".join(f"{e(k)} {float(v):.2f} s" for k, v in value.items() if isinstance(v, (int, float)))


def _replicas(view: Mapping[str, Any]) -> str:
    replicas = view.get("replicas") or []
    if not replicas:
        return '<p class="muted">No replicas.</p>'
    rows = "".join(
        f'<tr data-replica="{e(r["id"])}"><td>{e(r["id"])}</td><td>{e(r.get("node") or "this machine")}</td>'
        f'<td class="state">{e(r["state"])}</td><td>{e(r.get("in_flight", 0))}</td>'
        f"<td>{_cold_start(r.get('cold_start'))}</td><td>{e(r.get('error') or r.get('reason') or '')}</td></tr>"
        for r in replicas
    )
    return (
        '<table><thead><tr><th>replica</th><th>node</th><th>state</th><th>in flight</th>'
        f"<th>cold start</th><th>note</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _charts(traffic: Mapping[str, Any], samples: list[Sample]) -> str:
    arrivals = list(traffic.get("arrivals") or [])[-300:]
    concurrency = list(traffic.get("concurrency") or [])[-300:]
    return "".join(
        [
            svg_chart("requests a second (last 5 min, server history)", [("arrivals", arrivals)]),
            svg_chart("concurrency (server history)", [("mean", concurrency)]),
            svg_chart(
                "replicas (while this page is open)",
                [("ready", [s.replicas_ready for s in samples]), ("total", [s.replicas_total for s in samples])],
            ),
            svg_chart(
                "queue and in flight",
                [("queued", [s.queued for s in samples]), ("in flight", [s.in_flight for s in samples])],
            ),
            svg_chart(
                "latency between refreshes",
                [("p50", [s.p50 for s in samples]), ("p99", [s.p99 for s in samples])],
                unit=" s",
            ),
        ]
    )


def _async_queue(counts: Mapping[str, int]) -> str:
    shown = ", ".join(f"{e(status)} <b>{e(n)}</b>" for status, n in sorted(counts.items())) or "empty"
    return f'<p id="async-queue">Async queue: {shown}</p>'


def deployment_fragment(
    view: Mapping[str, Any], traffic: Mapping[str, Any], samples: list[Sample], async_counts: Mapping[str, int]
) -> str:
    decision = view.get("last_decision") or {}
    error = view.get("error")
    return (
        f'<p>{badge(view["status"])} replicas <b id="replicas">{e(view["replicas_ready"])}/{e(view["replicas_total"])}</b>'
        f' ready · in flight <b>{e(view.get("in_flight", 0))}</b> · queued <b id="queued">{e(view.get("queued", 0))}</b>'
        f' · environments: {e(", ".join(view.get("environments") or []) or "none")}</p>'
        + (f'<p class="error">{e(error)}</p>' if error else "")
        + (f'<p class="muted">Last decision: {e(decision.get("reason"))}</p>' if decision else "")
        + _async_queue(async_counts)
        + f'<div class="charts">{_charts(traffic, samples)}</div><h2>Replicas</h2>{_replicas(view)}'
    )


def _setting_text(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)


def _settings_form(settings: Mapping[str, Any]) -> str:
    fields = "".join(
        f'<label>{e(name)} <input name="{e(name)}" id="setting-{e(name)}" value="{e(_setting_text(value))}"'
        f' data-original="{e(_setting_text(value))}"></label>'
        for name, value in settings.items()
    )
    return (
        f'<form id="settings" class="settings">{fields}'
        '<button type="submit" id="apply-settings">Apply</button></form>'
        '<pre id="settings-result" class="result" aria-live="polite"></pre>'
    )


def deployment_page(
    view: Mapping[str, Any], traffic: Mapping[str, Any], samples: list[Sample], async_counts: Mapping[str, int], csrf: str
) -> str:
    model_id, deployment_id = view["model_id"], view["id"]
    api = f"/ui/api/v1/models/{quote(model_id, safe='')}/deployments/{quote(deployment_id, safe='')}"
    advise = f"/ui/advise/models/{quote(model_id, safe='')}/deployments/{quote(deployment_id, safe='')}"
    frag = f"/ui/fragment/models/{quote(model_id, safe='')}/deployments/{quote(deployment_id, safe='')}"
    body = (
        f'<h1>{e(view["model_name"])} <span class="muted">/ {e(deployment_id)} ({e(view["kind"])})</span></h1>'
        f'<div id="deployment" data-api="{e(api)}" data-model="{e(model_id)}" data-deployment="{e(deployment_id)}">'
        '<div class="actions">'
        '<button data-action="activate" id="activate">Activate</button> '
        '<button data-action="deactivate" id="deactivate">Deactivate</button> '
        '<button data-action="promote" id="promote">Promote to production</button>'
        '<pre id="action-result" class="result" aria-live="polite"></pre></div>'
        f'<div class="live" data-src="{e(frag)}" id="live">{deployment_fragment(view, traffic, samples, async_counts)}</div>'
        f'<h2>Autoscaling settings</h2>{_settings_form(view.get("autoscaling_settings") or {})}'
        '<h2>Advice</h2><p class="muted">Replays this deployment\'s recorded traffic through <code>swell advise</code> '
        "(a few seconds to a minute); each finding shows its simulated effect and applies its PATCH body in one click.</p>"
        f'<button id="advise" data-url="{e(advise)}">Run swell advise</button>'
        '<div id="advice" aria-live="polite"></div>'
        '<h2>Events</h2><ol id="events" class="events"><li class="muted">waiting for events…</li></ol>'
        '<h2>Logs</h2><pre id="logs" class="logs"></pre>'
        "</div>"
    )
    return _shell(f"{view['model_name']} {deployment_id}", body, csrf=csrf, signed_in=True)
