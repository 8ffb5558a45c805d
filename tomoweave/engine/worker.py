"""What runs on a worker: rebuild the protocol, its parameters and the payload; call process."""

from __future__ import annotations

import errno
import json
import time
import traceback
from typing import Any

from pydantic import BaseModel

from tomoweave.engine.context import ProcessContext
from tomoweave.engine.errors import ItemError, TomoweaveError
from tomoweave.model import Particle
from tomoweave.model.item_registry import item_type_reference, resolve_item_type
from tomoweave.model.particle_table import ParticleTable, as_particle_table
from tomoweave.store.particle_tables import (
    TABLE_ITEM_TYPE,
    TABLE_KEY_PREFIX,
    TABLES_FOLDER,
    is_columnar,
    table_file_name,
    table_record,
    write_particle_table,
)


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
        outcome["outputs"] = _encode_outputs(protocol_class, result or {}, context)
    except (ItemError, TomoweaveError) as error:
        outcome["error"] = str(error)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            outcome["error"] = f"{type(error).__name__}: {error}"
            outcome["traceback"] = traceback.format_exc()
        else:  # outputs are written through temporary names: none is left half-written
            outcome["error"] = (f"no space left on the disk of {context.run_dir} while "
                                f"writing outputs (nothing half-written is kept); free space, "
                                f"then resume the run")
    except Exception as error:
        outcome["error"] = f"{type(error).__name__}: {error}"
        outcome["traceback"] = traceback.format_exc()
    finally:
        context.close()
    # messages reached the run log live, through the task's events file (task_events.py)
    outcome["commands"] = context.commands
    outcome["seconds"] = time.time() - started
    return outcome


def _encode_outputs(protocol_class, result: dict[str, Any],
                    context: ProcessContext) -> dict[str, list[tuple[str, str, str]]]:
    """(key, item type, JSON) rows for the catalog; particles go to one table file per output
    (see store.particle_tables), written here, on the worker, and one row points at it."""
    encoded: dict[str, list[tuple[str, str, str]]] = {}
    for output_name, value in result.items():
        if output_name not in protocol_class.outputs:
            raise TomoweaveError(f"{protocol_class.name} returned undeclared output '{output_name}'")
        expected = protocol_class.outputs[output_name].item_type
        if isinstance(value, ParticleTable) and expected is not Particle:
            raise TomoweaveError(f"{protocol_class.name}: output '{output_name}' expects "
                                 f"{expected.__name__}, got a ParticleTable")
        values = value if isinstance(value, list | tuple | ParticleTable) else [value]
        if not isinstance(values, ParticleTable):
            for item in values:
                if not isinstance(item, expected):
                    raise TomoweaveError(
                        f"{protocol_class.name}: output '{output_name}' expects "
                        f"{expected.__name__}, got {type(item).__name__}")
        if is_columnar(expected.__name__):
            encoded[output_name] = _table_rows(output_name, as_particle_table(values), context)
        else:
            encoded[output_name] = [(item.name, expected.__name__, item.model_dump_json())
                                    for item in values]
    return encoded


def _table_rows(output_name: str, table: ParticleTable,
                context: ProcessContext) -> list[tuple[str, str, str]]:
    if not len(table):
        return []
    folder = context.run_dir / "outputs" / TABLES_FOLDER / output_name
    path = write_particle_table(folder / table_file_name(context.task_key, context.digest), table)
    record = table_record(f"{TABLE_KEY_PREFIX}{context.task_key}", context.relative(path), table)
    return [(f"{TABLE_KEY_PREFIX}{context.task_key}", TABLE_ITEM_TYPE, json.dumps(record))]


def _limit_threads(n_threads: int) -> None:
    try:
        import numba

        numba.set_num_threads(max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # numba missing or already configured differently: harmless
        pass
