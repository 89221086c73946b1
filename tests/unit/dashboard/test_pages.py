"""The dashboard's HTML: every value from a user or a model is escaped; the eight badges."""

from __future__ import annotations

from swell.dashboard._pages import BADGES, badge, index_fragment, signin_page
from swell.serving import DeploymentStatus

EVIL = '<script>alert("x")</script>'


def test_names_and_ids_are_escaped() -> None:
    model = {
        "id": "m1",
        "name": EVIL,
        "environments": {EVIL: "d1"},
        "deployments": [
            {"id": "d1", "model_id": "m1", "kind": "published", "status": "Active", "replicas_ready": 1,
             "replicas_total": 2, "environments": [EVIL]},
        ],
    }
    html = index_fragment([model])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="/ui/models/m1/deployments/d1"' in html and "1/2" in html
    assert "<script>" not in signin_page(EVIL).split("</head>", 1)[1]


def test_the_eight_statuses_each_have_a_badge() -> None:
    assert set(BADGES) == {status.value for status in DeploymentStatus}  # DESIGN.md's words
    assert 'class="badge bad"' in badge("Failed") and 'data-status="Scaled to zero"' in badge("Scaled to zero")


def test_a_rolling_promotion_s_split_shows_on_each_deployment() -> None:
    deployment = {"model_id": "m1", "kind": "published", "status": "Active", "replicas_ready": 1, "replicas_total": 1}
    model = {
        "id": "m1", "name": "m", "environments": {"production": "old"},
        "deployments": [
            {**deployment, "id": "old", "environments": ["production"], "traffic": {"production": 90}},
            {**deployment, "id": "new", "environments": [], "traffic": {"production": 10}},
            {**deployment, "id": "idle", "environments": [], "traffic": {}},
        ],
    }
    html = index_fragment([model])
    assert "<td>production 90%</td>" in html and "<td>production 10%</td>" in html and "<td>—</td>" in html
