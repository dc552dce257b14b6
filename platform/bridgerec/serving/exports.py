"""A tuned LLM method's export, served: where it is, and the LLM deployment that serves its adapter.

The LLM-tuning methods (``bigrec``, ``llama4rec``) log an export under their run's artifacts
(``runs:/RUN/<method>/``): a LoRA ``adapter/`` and a ``<method>.json`` whose ``serving`` block holds
the backbone and prompt settings the run was measured with. A strategy's ``run`` setting
(``strategy_args.<method>.run``: ``runs:/RUN``, ``runs:/RUN/<method>`` or the local directory)
names one; :func:`local_export` fetches it once and :func:`adapter_llm` turns the app's ``llm``
into one that serves its adapter with those settings. One app has one LLM deployment, so it serves
at most one run's adapter: :func:`one_adapter` refuses two.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Any, Optional

__all__ = ["local_export", "read_export", "adapter_llm", "one_adapter"]


def local_export(source: str, method: str, tracking_uri: Optional[str] = None) -> str:
    """The local directory of ``method``'s export ``source`` (downloaded once per run: loading the
    same export again replaces the copy instead of piling them up)."""
    from bridgerec._config_base import ConfigError

    key = f"strategy_args.{method}.run"
    if not source.startswith("runs:/"):
        if not os.path.isdir(source):
            raise ConfigError(f"{key}={source}: neither runs:/RUN nor a directory")
        return source
    import mlflow

    uri = source.rstrip("/")
    if uri.count("/") == 1:  # runs:/RUN: the export is its <method>/ artifacts
        uri += f"/{method}"
    dst = os.path.join(tempfile.gettempdir(), f"bridgerec-{method}-exports", re.sub(r"[^A-Za-z0-9_.-]+", "_", uri[6:]))
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri, dst_path=dst)
    except Exception as exc:  # unknown run, no such artifact, unreachable server
        raise ConfigError(f"{key}={source}: cannot download the run's {method} export ({exc})") from None


def read_export(source: str, method: str, tracking_uri: Optional[str] = None,
                need_adapter: bool = True) -> tuple[str, dict[str, Any]]:
    """(the local export directory, its ``<method>.json``), refusing an export that lacks what
    serving needs (the json, its ``serving`` block, the adapter when ``need_adapter``)."""
    from bridgerec._config_base import ConfigError

    key = f"strategy_args.{method}.run={source}"
    local = local_export(source, method, tracking_uri)
    meta_path = os.path.join(local, f"{method}.json")
    if not os.path.exists(meta_path) or (need_adapter and not os.path.isdir(os.path.join(local, "adapter"))):
        raise ConfigError(f"{key}: no {method}.json{' and adapter/' if need_adapter else ''} there "
                          f"(not a {method} run's export?)")
    with open(meta_path) as fh:
        meta = json.load(fh)
    if "serving" not in meta:
        raise ConfigError(f"{key}: logged before runs exported their serving settings; train it again")
    return local, meta


def adapter_llm(llm: Any, serving: dict[str, Any], adapter_dir: Optional[str], key: str, **update: Any) -> Any:
    """The app's :class:`~bridgerec.serving.llm.LLMArgs` serving a run's adapter (``adapter_dir``;
    None: the backbone untuned) with the run's chat template and prompt version; ``llm`` None:
    the run's packaged backbone (a run on the tiny backbone needs ``llm.model``: its directory).
    ``update``: further LLMArgs fields (history_len, max_tokens)."""
    from bridgerec._config_base import ConfigError
    from bridgerec.serving.llm import LLMArgs

    if llm is None:
        if serving["backbone"] == "tiny":
            raise ConfigError(f"{key}: the run's backbone is the tiny one built from its dataset; give llm.model "
                              "(its directory, <work_dir>/models/tiny-<hash>)")
        llm = LLMArgs(model=serving["backbone"])
    lora = dict(llm.settings.get("lora", {}))
    if adapter_dir:
        lora["adapter"] = os.path.abspath(adapter_dir)
    settings = {**llm.settings, "chat_template": serving["chat_template"], "prompt_version": serving["prompt_version"],
                **({"lora": lora} if lora else {})}
    return llm.model_copy(update={"settings": settings, **update})


def one_adapter(args: Any) -> None:
    """Refuse an app given two methods' runs: its one LLM deployment serves one adapter."""
    from bridgerec._config_base import ConfigError

    runs = [m for m, s in args.strategy_args.items() if isinstance(s, dict) and s.get("run")]
    if len(runs) > 1:
        raise ConfigError(f"strategy_args: runs given for {', '.join(runs)}; an app's one LLM deployment serves one "
                          "run's adapter (deploy one app per run)")
