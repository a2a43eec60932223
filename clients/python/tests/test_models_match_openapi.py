"""The client's models are written by hand; this keeps them honest against
the OpenAPI document the server generates (`berth openapi`), so a field added,
renamed or made optional on one side fails here instead of in Bay."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from berth_client import models

ROOT = Path(__file__).resolve().parents[3]

# Client model → server schema, where the names differ.
SCHEMA_OF = {"ContainerInfo": "StatusInfo", "Plugins": "PluginsResponse"}
MODELS = [
    models.ContainerState,
    models.ContainerInfo,
    models.RuntimeInstance,
    models.MultiContainerInfo,
    models.Created,
    models.Origin,
    models.PluginSummary,
    models.ConfigMapStatus,
    models.Plugins,
]


@pytest.fixture(scope="module")
def schemas() -> dict:
    binary = ROOT / "target/debug/berth"
    assert binary.exists(), f"{binary} missing: run through tests/run.sh"
    out = subprocess.run([str(binary), "openapi"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["components"]["schemas"]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_model_fields_are_the_schema_properties(schemas, model):
    schema = schemas[SCHEMA_OF.get(model.__name__, model.__name__)]
    assert set(model.model_fields) == set(schema["properties"])
    # A field the client insists on must be one the server always sends.
    required_by_client = {n for n, f in model.model_fields.items() if f.is_required()}
    assert required_by_client <= set(schema.get("required", []))


def test_status_words_are_the_servers(schemas):
    assert {s.value for s in models.ContainerStatus} == set(schemas["SessionStatus"]["enum"])
