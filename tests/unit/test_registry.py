"""Handler registry (kvstream.handlers.registry): one list of APIs, inside what kio can decode,
advertised the way real clients need it, and documented where it is declared."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from collections import Counter

import pytest
from kio.index import UnknownEntity, load_request_schema, load_response_schema
from kio.schema.index import api_key_map

from kvstream.handlers import registry
from kvstream.handlers.registry import (
    ADVERTISED_ONLY,
    HANDLERS,
    HandlerSpec,
    advertised_versions,
    served_versions,
)
from kvstream.protocol.codec import OWN_SCHEMAS, model_version

PRODUCE, FETCH, METADATA, FIND_COORDINATOR, API_VERSIONS = 0, 1, 3, 10, 18


def _camel(snake: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def _specs() -> list[HandlerSpec]:
    return sorted(HANDLERS.values(), key=lambda s: s.api_key)


def _handler_modules() -> set[str]:
    import kvstream.handlers as package

    return {
        f"kvstream.handlers.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if info.name not in ("registry", "services") and not info.name.startswith("_")
    }


def test_every_handler_module_is_in_the_registrys_explicit_list() -> None:
    """A handler module that registry.py does not import would be served only when something
    else happened to import it first."""
    registered = {spec.handler.__module__ for spec in HANDLERS.values()}
    assert _handler_modules() == registered


@pytest.mark.parametrize(
    "first_import",
    ["kvstream.handlers.registry", "kvstream.handlers.produce", "kvstream.handlers.topics"],
)
def test_the_table_is_complete_whichever_module_is_imported_first(first_import: str) -> None:
    """In a fresh interpreter, importing any one module of the package fills the whole table."""
    code = (
        f"import {first_import}\n"
        "from kvstream.handlers.registry import HANDLERS\n"
        "print(sorted(HANDLERS))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == str(sorted(HANDLERS))


def test_registering_a_key_twice_is_refused() -> None:
    key = next(iter(HANDLERS))
    with pytest.raises(RuntimeError, match="twice"):
        registry.handles(key, (0, 0))(HANDLERS[key].handler)


@pytest.mark.parametrize("spec", _specs(), ids=lambda s: f"{s.api_key}-{s.name}")
def test_every_served_version_is_decodable_by_kio(spec: HandlerSpec) -> None:
    """Through kio, or (OWN_SCHEMAS) our own reader over the classes of a model version."""
    assert 0 <= spec.min_version <= spec.max_version
    for version in range(spec.min_version, spec.max_version + 1):
        if (spec.api_key, version) in OWN_SCHEMAS:
            model = model_version(spec.api_key, version)
            assert model != version
            assert load_request_schema(spec.api_key, model).__api_key__ == spec.api_key
            load_response_schema(spec.api_key, model)
            continue
        request = load_request_schema(spec.api_key, version)
        response = load_response_schema(spec.api_key, version)
        assert request.__api_key__ == spec.api_key
        assert request.__version__ == version
        assert response.__version__ == version


def test_served_versions_match_handlers() -> None:
    assert served_versions() == {k: (s.min_version, s.max_version) for k, s in HANDLERS.items()}


def test_advertised_versions_have_unique_keys_and_sane_ranges() -> None:
    advertised = advertised_versions()
    counts = Counter(k for k, _, _ in advertised)
    assert [k for k, n in counts.items() if n > 1] == []
    assert advertised == sorted(advertised)
    served = served_versions()
    assert {k for k, _, _ in advertised} == set(served)
    for key, lo, hi in advertised:
        assert 0 <= lo <= hi
        assert hi == served[key][1]  # never advertise beyond what is decoded
        assert lo <= served[key][0]


def test_advertised_only_versions_are_below_the_served_range() -> None:
    # Versions advertised only for librdkafka's feature detection: requests in them are refused,
    # so they must sit below what is served and kio must really be unable to decode them (or the
    # handler should serve them instead).
    served = served_versions()
    for key, lowest in ADVERTISED_ONLY.items():
        assert key in served
        assert lowest < served[key][0]
        for version in range(lowest, served[key][0]):
            with pytest.raises(UnknownEntity):
                load_request_schema(key, version)


def test_produce_and_fetch_advertised_from_v0() -> None:
    # librdkafka (rdkafka_feature.c) derives features from advertised ranges: before 2.11.1 it
    # stops compressing unless Produce v2 is listed, and enables LZ4 only with Fetch v2 listed.
    advertised = {k: (lo, hi) for k, lo, hi in advertised_versions()}
    assert advertised[PRODUCE][0] == 0
    assert advertised[PRODUCE][1] >= 7  # aiokafka 0.14 uses Produce v7
    assert advertised[FETCH][0] == 0
    assert advertised[FETCH][1] >= 11  # aiokafka 0.14 uses Fetch v11


def test_api_versions_advertised_from_v0_to_at_least_v3() -> None:
    advertised = {k: (lo, hi) for k, lo, hi in advertised_versions()}
    lo, hi = advertised[API_VERSIONS]
    assert lo == 0
    assert hi >= 3


def test_non_flexible_versions_real_clients_use_are_served() -> None:
    # aiokafka 0.14: ApiVersions v0, Metadata v5, Fetch v11, Produce v7; kcat: Metadata v4.
    served = served_versions()
    for key, version in [(API_VERSIONS, 0), (METADATA, 5), (METADATA, 4), (FETCH, 11)]:
        lo, hi = served[key]
        assert lo <= version <= hi, (key, version)
    lo, hi = served[PRODUCE]
    assert lo <= 7 <= hi


def test_find_coordinator_advertised_from_v0() -> None:
    # librdkafka enables LZ4 only when FindCoordinator v0 is advertised.
    advertised = {k: (lo, hi) for k, lo, hi in advertised_versions()}
    assert advertised[FIND_COORDINATOR][0] == 0


_DECLARATION = re.compile(r"([A-Z][A-Za-z]+) \(API key (\d+)\), versions (\d+)-(\d+)")


@pytest.mark.parametrize("spec", _specs(), ids=lambda s: f"{s.api_key}-{s.name}")
def test_handler_module_docstring_declares_its_api(spec: HandlerSpec) -> None:
    module = sys.modules[spec.handler.__module__]
    doc = module.__doc__
    assert doc, f"{module.__name__} has no docstring"
    name = _camel(api_key_map[spec.api_key])
    # The module's docstring starts with the API it serves ("Name (API key N)"), and names
    # every API registered in it with its served version range.
    first = _DECLARATION.match(doc)
    assert first is not None, f"{module.__name__}: docstring does not start with 'Name (API key N)'"
    declared = {int(m[2]): (m[1], int(m[3]), int(m[4])) for m in _DECLARATION.finditer(doc)}
    assert spec.api_key in declared, f"{module.__name__} does not declare API key {spec.api_key}"
    assert declared[spec.api_key] == (name, spec.min_version, spec.max_version)


def test_every_handler_module_registers_what_it_declares() -> None:
    by_module: dict[str, set[int]] = {}
    for spec in _specs():
        by_module.setdefault(spec.handler.__module__, set()).add(spec.api_key)
    for module_name, keys in by_module.items():
        doc = importlib.import_module(module_name).__doc__ or ""
        declared = {int(m[2]) for m in _DECLARATION.finditer(doc)}
        assert declared == keys, module_name
