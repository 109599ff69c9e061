"""Self-tuned ef_search over HTTP: measured as a collection grows, shown by GET, kept across a restart; an explicit
ef_search in PUT wins."""

from typing import Any

from fastapi.testclient import TestClient

from app.engine.engine import SearchEngine
from tests.conftest import AppFactory
from tests.engine.test_hnsw_tuning import clustered


def _post(client: TestClient, name: str, first: int, count: int) -> None:
    vectors = clustered(first + count)[first:]
    for start in range(0, count, 500):
        docs = [{"id": f"d{first + start + i}", "text": f"document {first + start + i}", "vector": v.tolist()}
                for i, v in enumerate(vectors[start:start + 500])]
        assert client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200


def _tuning(client: TestClient, name: str) -> dict[str, Any]:
    """The collection's hnsw_tuning once any measurement in progress has ended."""
    engine: SearchEngine = client.app.state.engine  # type: ignore[attr-defined]
    engine.collection(name).wait_upkeep(60)
    info = client.get(f"/v1/collections/{name}").json()
    return dict(info["hnsw_tuning"])


def test_ef_search_is_tuned_as_the_collection_grows_and_kept_across_a_restart(make_client: AppFactory) -> None:
    with make_client() as client:
        assert client.put("/v1/collections/grow").status_code == 201
        info = client.get("/v1/collections/grow").json()
        assert info["settings"]["hnsw"]["ef_search"] is None
        assert info["hnsw_tuning"] == {"ef_search": 512, "source": "untuned", "recall_target": 0.95, "recall": None,
                                       "k": None, "sample": None, "measured_at": None,
                                       "measuring": False}
        _post(client, "grow", 0, 500)
        assert _tuning(client, "grow")["source"] == "untuned"  # too small to measure
        _post(client, "grow", 500, 700)  # 1,000 after its first batch, then 1,200
        first = _tuning(client, "grow")
        assert first["source"] == "tuned" and first["measured_at"] == 1000 and first["recall"] >= 0.95
        assert (first["k"], first["sample"]) == (10, 200)
        _post(client, "grow", 1200, 700)
        assert _tuning(client, "grow") == first  # 1,900 < twice 1,000: not measured again
        _post(client, "grow", 1900, 200)
        second = _tuning(client, "grow")
        assert second["measured_at"] == 2100 and second["recall"] >= 0.95
        engine: SearchEngine = client.app.state.engine  # type: ignore[attr-defined]
        assert engine.collection("grow").dense.ef_search == second["ef_search"]  # what searches walk with
        # Kept by the next check's snapshot, not only by a clean stop: a crash measured again at every start (QA)
        assert engine.collection("grow").snapshot_soon
        engine.snapshot_due()
        assert engine.collection("grow").writes_since_snapshot == 0  # so the stop below snapshots nothing
    with make_client() as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        assert engine.collection("grow")._upkeeper is None  # loaded from the snapshot: nothing re-measured
        assert client.get("/v1/collections/grow").json()["hnsw_tuning"] == second


def test_an_explicit_ef_search_is_never_tuned(make_client: AppFactory) -> None:
    with make_client() as client:
        body = {"hnsw": {"ef_search": 40}}
        assert client.put("/v1/collections/fixed", json=body).status_code == 201
        _post(client, "fixed", 0, 1200)
        info = client.get("/v1/collections/fixed").json()
        assert info["settings"]["hnsw"]["ef_search"] == 40
        assert info["hnsw_tuning"]["source"] == "explicit" and info["hnsw_tuning"]["ef_search"] == 40
        engine: SearchEngine = client.app.state.engine  # type: ignore[attr-defined]
        assert engine.collection("fixed")._upkeeper is None
        assert client.put("/v1/collections/fixed", json=body).status_code == 200


def test_the_recall_target_is_a_setting_and_bad_ef_values_are_refused(make_client: AppFactory) -> None:
    with make_client(hnsw_recall_target=0.5) as client:
        client.put("/v1/collections/loose")
        _post(client, "loose", 0, 1200)
        tuning = _tuning(client, "loose")
        assert tuning["recall_target"] == 0.5 and tuning["recall"] >= 0.5
        for bad in (4, 5000, "many", True):
            response = client.put("/v1/collections/bad", json={"hnsw": {"ef_search": bad}})
            assert response.status_code == 422, bad
