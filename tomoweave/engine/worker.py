"""What runs on a worker: rebuild the protocol, its parameters and the payload; call process."""

from __future__ import annotations

import time
import traceback
from typing import Any

from pydantic import BaseModel

from tomoweave.engine.context import ProcessContext
from tomoweave.engine.errors import ItemError, TomoweaveError
from tomoweave.model.item_registry import item_type_reference, resolve_item_type


def encode_payload(payload: Any) -> tuple[str | None, Any]:
    if isinstance(payload, BaseModel):
        return item_type_reference(type(payload)), payload.model_dump(mode="json")
    return None, payload


def decode_payload(type_name: str | None, data: Any) -> Any:
    if type_name is None:
        return data
    return resolve_item_type(type_name).model_validate(data)


def execute_task(protocol_name: str, params: dict, payload_type: str | None, payload: Any,
                 context: ProcessContext, protocol_module: str | None = None) -> dict[str, Any]:
    """Run one task; never raises: errors come back in the outcome. ``protocol_module`` is
    where the protocol class lives, for protocols registered at run time."""
    from tomoweave.engine.registry import get_protocol

    started = time.time()
    _limit_threads(context.n_threads)
    outcome: dict[str, Any] = {"outputs": {}, "error": None, "traceback": None}
    try:
        protocol_class = get_protocol(protocol_name, protocol_module, check_programs=False)
        validated = protocol_class.Params(**params)
        result = protocol_class().process(decode_payload(payload_type, payload), validated, context)
        outcome["outputs"] = _encode_outputs(protocol_class, result or {})
    except (ItemError, TomoweaveError) as error:
        outcome["error"] = str(error)
    except Exception as error:
        outcome["error"] = f"{type(error).__name__}: {error}"
        outcome["traceback"] = traceback.format_exc()
    finally:
        context.close()
    # messages reached the run log live, through the task's events file (task_events.py)
    outcome["commands"] = context.commands
    outcome["seconds"] = time.time() - started
    return outcome


def _encode_outputs(protocol_class, result: dict[str, Any]) -> dict[str, list[tuple[str, str, str]]]:
    encoded: dict[str, list[tuple[str, str, str]]] = {}
    for output_name, value in result.items():
        if output_name not in protocol_class.outputs:
            raise TomoweaveError(f"{protocol_class.name} returned undeclared output '{output_name}'")
        expected = protocol_class.outputs[output_name].item_type
        values = value if isinstance(value, list | tuple) else [value]
        records = []
        for item in values:
            if not isinstance(item, expected):
                raise TomoweaveError(
                    f"{protocol_class.name}: output '{output_name}' expects {expected.__name__},"
                    f" got {type(item).__name__}")
            records.append((item.name, expected.__name__, item.model_dump_json()))
        encoded[output_name] = records
    return encoded


def _limit_threads(n_threads: int) -> None:
    try:
        import numba

        numba.set_num_threads(max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # numba missing or already configured differently: harmless
        pass
