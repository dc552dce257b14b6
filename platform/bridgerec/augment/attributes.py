"""Llama4Rec data augmentation: fill missing item attributes with the LLM.

For every item whose value in one of ``augment.attributes.columns`` is missing or empty (a column
the item table lacks is missing for every item), the LLM writes it from the item's title and its
known attributes. Output columns: ``iid``, ``column``, ``value``, ``prompt``, ``prompt_iids``,
token counts and provenance; :func:`fill_item_attributes` applies them to an item table.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pandas as pd

from bridgerec.augment._llm_stage import LLMStage, llm_output_columns
from bridgerec.llm.engine import GenerationParams
from bridgerec.llm.prompts import Prompt, attribute_prompt

__all__ = ["AttributesStage", "fill_item_attributes"]

_KNOWN = ("text",)
"""Item columns shown as context besides the title (when present and not the one being filled)."""


def _missing(values: pd.Series) -> pd.Series:
    return values.isna() | (values.astype(str).str.strip() == "")


def _attribute_prompt(row: Any, catalog: Any, version: str) -> Prompt:
    return attribute_prompt(catalog.item(int(row.iid)), str(row.column), json.loads(row.known_json), version=version)


def fill_item_attributes(items: pd.DataFrame, filled: pd.DataFrame) -> pd.DataFrame:
    """``items`` with the generated values written into their missing cells."""
    out = items.copy()
    for column, part in filled.groupby("column"):
        values = dict(zip(part["iid"].astype("int64"), part["value"]))
        if column not in out:
            out[column] = ""
        gen = out["iid"].map(values)
        out[column] = out[column].where(~(_missing(out[column]) & gen.notna()), gen)
    return out


class AttributesStage(LLMStage):
    name = "attributes"

    def stage_config(self) -> dict[str, Any]:
        return self.cfg.augment.attributes.model_dump()

    def params(self) -> GenerationParams:
        return GenerationParams.from_config(self.cfg.llm.generation, max_tokens=self.cfg.augment.attributes.max_tokens,
                                            stop=("\n",))

    def row_prompt(self) -> tuple[Callable[..., Prompt], dict[str, Any]]:
        return _attribute_prompt, {}

    def tasks(self) -> pd.DataFrame:
        items = self.ctx.dataset.items()
        items = items[items["iid"].isin(self.ctx.item_ids())]
        columns = self.cfg.augment.attributes.columns
        present = {c: ~_missing(items[c]) for c in dict.fromkeys((*_KNOWN, *columns)) if c in items}
        rows = []
        for column in columns:
            missing = ~present[column] if column in present else pd.Series(True, index=items.index)
            for idx in items.index[missing]:
                known = {c: str(items.at[idx, c]) for c, ok in present.items() if c != column and ok[idx]}
                rows.append((int(items.at[idx, "iid"]), column, json.dumps(known)))
        return pd.DataFrame(rows, columns=["iid", "column", "known_json"]).astype({"iid": "int64"})

    def finish(self, shard: pd.DataFrame) -> pd.DataFrame:
        values = [str(t).strip() for t in shard["generated_text"].fillna("")] if len(shard) else []
        return pd.DataFrame({
            "iid": shard["iid"].astype("int64").tolist(),
            "column": shard["column"].astype(str).tolist(),
            "value": values,
            **llm_output_columns(shard),
        })
