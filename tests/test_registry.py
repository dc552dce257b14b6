"""The one registry helper, and the config fields that name plugins being checked against it."""

from __future__ import annotations

import sys

import pytest

from bridgerec._registry import Registry
from bridgerec.config import PLUGIN_FIELDS, ConfigError, load_config


def test_register_lookup_duplicates_and_unknown_names():
    reg = Registry("widget", "thing.name", lazy={"json": "json:dumps"})
    reg.register("a", 1)
    assert reg.names() == ["a", "json"] and "json" in reg and len(reg) == 2 and sorted(reg) == ["a", "json"]
    assert reg.get_plugin("a") == 1 and reg["json"] is sys.modules["json"].dumps
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a", 2)
    with pytest.raises(ValueError, match="widget 'json' is already registered"):
        reg.register_lazy("json", "json:loads")
    with pytest.raises(ValueError, match=r"^thing\.name: unknown widget 'b'; registered: a, json$"):
        reg.get_plugin("b")
    with pytest.raises(KeyError):
        reg["b"]


def test_lazy_entries_are_not_imported_until_looked_up():
    reg = Registry("widget", lazy={"x": "bridgerec_no_such_module:thing"})
    assert reg.names() == ["x"]
    with pytest.raises(ModuleNotFoundError):
        reg.get_plugin("x")


def test_a_check_rejects_wrong_plugins():
    def only_ints(name, obj):
        if not isinstance(obj, int):
            raise TypeError(f"{obj!r} is not an int")

    with pytest.raises(TypeError):
        Registry("widget", check=only_ints).register("a", "no")


@pytest.mark.parametrize("key,value", [("data.source.kind", "nope"), ("model.name", "nope"), ("method.name", "nope"),
                                       ("llm.engine", "nope"), ("augment.stages", "[profiles, nope]")])
def test_every_plugin_field_is_checked_against_its_registry(key, value):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}={value}"])
    names = PLUGIN_FIELDS[key].names()
    assert f"{key}: unknown" in str(info.value) and f"registered: {', '.join(names)}" in str(info.value)


def test_registered_names_are_accepted():
    cfg = load_config(None, ["model.name=sasrec", "method.name=darec", "llm.engine=hf", "data.source.kind=table",
                             "data.source.path=x.csv", "augment.stages=[profiles, text_embeddings]"])
    assert cfg.model.name == "sasrec" and cfg.augment.stages == ["profiles", "text_embeddings"]
