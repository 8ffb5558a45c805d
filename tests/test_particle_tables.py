"""Columnar particle sets: the table against lists of Particle, its Parquet files, and a
project's particle sets stored as one catalog row per task (issue 13, item 1)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import BaseModel

from tomoweave.api import Project
from tomoweave.engine import Output, Protocol, Task
from tomoweave.engine.registry import register_protocol
from tomoweave.geometry.rotations import random_rotations
from tomoweave.inspect_project import show
from tomoweave.model import Particle, ParticleTable
from tomoweave.model.particle_table import ParticleTableError
from tomoweave.store.particle_tables import (
    TABLE_ITEM_TYPE,
    read_particle_table,
    set_particles,
    write_particle_table,
)


def _particles(count: int, tomograms: int = 3, seed: int = 0) -> list[Particle]:
    rng = np.random.default_rng(seed)
    rotations = random_rotations(count, rng) if count else []
    return [Particle(name=f"TS_{i % tomograms:02d}/{i}", tomogram=f"TS_{i % tomograms:02d}",
                     position_a=tuple(rng.normal(0, 500, 3)), rotation=rotations[i].tolist(),
                     score=None if i % 4 == 0 else float(rng.random()),
                     class_id=None if i % 3 == 0 else i % 5,
                     normal=None if i % 2 else (0.0, 0.0, 1.0))
            for i in range(count)]


def test_table_equals_the_particles_it_was_made_of():
    particles = _particles(40)
    table = ParticleTable.from_particles(particles)
    assert len(table) == 40
    assert list(table) == particles  # None stays None, numbers and tuples come back exact
    assert table[7] == particles[7] and table[-1] == particles[-1]
    np.testing.assert_array_equal(table.positions_a, [p.position_a for p in particles])
    np.testing.assert_array_equal(table.rotations, [p.rotation for p in particles])
    scores = table.scores
    assert np.isnan(scores[0]) and scores[1] == particles[1].score
    assert table.records(5, 3) == [p.to_record() for p in particles[5:8]]
    with pytest.raises(IndexError):
        table[40]


def test_by_tomogram_keeps_order_and_rows():
    particles = _particles(31, tomograms=4)
    groups = ParticleTable.from_particles(particles).by_tomogram()
    assert list(groups) == list(dict.fromkeys(p.tomogram for p in particles))
    for name, group in groups.items():
        assert list(group) == [p for p in particles if p.tomogram == name]


def test_parquet_round_trip_is_exact(tmp_path):
    table = ParticleTable.from_particles(_particles(25))
    path = write_particle_table(tmp_path / "t.parquet", table)
    assert not list(tmp_path.glob(".*tmp"))  # written through a temporary name
    back = read_particle_table(path)
    assert back == table and list(back) == list(table)
    import pandas as pd  # any Parquet reader reads it

    frame = pd.read_parquet(path)
    assert frame["name"].tolist() == table.names.tolist()


def test_bad_columns_are_refused_with_the_particle_named():
    good = ParticleTable.from_particles(_particles(3))
    rotations = np.array(good.rotations)
    rotations[1] *= 2.0
    with pytest.raises(ParticleTableError, match="TS_01/1: rotation"):
        good.with_columns(rotation=rotations)
    with pytest.raises(ParticleTableError, match="position_a"):
        good.with_columns(position_a=np.zeros((2, 3)))
    with pytest.raises(ParticleTableError, match="no Particle field 'colour'"):
        ParticleTable({"name": ["a"], "tomogram": ["t"], "position_a": [(0, 0, 0)],
                       "colour": ["red"]})


class EmitParams(BaseModel):
    per_tomogram: int = 10
    tomograms: int = 3
    shift_a: float = 0.0


class EmitParticles(Protocol):
    """A source protocol: ``per_tomogram`` particles for each of ``tomograms`` tomograms."""

    name = "test.emit_particles"
    Params = EmitParams
    outputs = {"particles": Output(Particle)}

    def plan(self, params, inputs):
        return [Task(key=f"TS_{t:02d}", payload=t) for t in range(params.tomograms)]

    def process(self, item, params, context):
        rng = np.random.default_rng(item)
        names = [f"TS_{item:02d}/{i}" for i in range(params.per_tomogram)]
        return {"particles": ParticleTable({
            "name": names, "tomogram": [f"TS_{item:02d}"] * len(names),
            "position_a": rng.normal(0, 300, (len(names), 3)) + params.shift_a,
            "score": rng.random(len(names))})}


def _register_emitter():
    register_protocol(EmitParticles)


def test_project_sets_are_one_row_per_task(tmp_path):
    _register_emitter()
    project = Project.init(tmp_path / "p")
    run = project.run("test.emit_particles", params={"per_tomogram": 50, "tomograms": 4},
                      executor="inline")
    output_set = project.output_set(run)
    rows = project.catalog.items(output_set.id)
    assert [r.item_type for r in rows] == [TABLE_ITEM_TYPE] * 4  # not 200 rows
    assert project.catalog.count_items(output_set.id) == 200
    particles = project.items(run)
    assert isinstance(particles, ParticleTable) and len(particles) == 200
    one = project.particles(run, tomogram="TS_02")
    assert len(one) == 50 and set(one.tomograms) == {"TS_02"}
    assert list(one) == [p for p in particles if p.tomogram == "TS_02"]
    page = show(project, f"{run.name}.particles", offset=95, limit=10)
    assert page["count"] == 200 and len(page["items"]) == 10
    assert page["items"] == particles.records(95, 10)

    # a per-tomogram protocol reads its tomogram's slice and writes a table
    filtered = project.run("particles.filter", inputs={"particles": run.name},
                           params={"min_score": 0.5}, executor="inline")
    kept = project.items(filtered)
    expected = particles.take(particles.scores >= 0.5)
    assert sorted(kept.names.tolist()) == sorted(expected.names.tolist())


def test_rerun_replaces_tables_and_resume_skips(tmp_path):
    _register_emitter()
    project = Project.init(tmp_path / "p")
    run = project.run("test.emit_particles", params={"per_tomogram": 5}, name="emit",
                      executor="inline")
    folder = project.root / run.folder / "outputs" / "tables" / "particles"
    first = sorted(p.name for p in folder.glob("*.parquet"))
    assert len(first) == 3
    unshifted = np.array(project.items(run).positions_a)
    project.run("test.emit_particles", params={"per_tomogram": 5}, name="emit",
                executor="inline")  # unchanged: skipped, same files
    assert sorted(p.name for p in folder.glob("*.parquet")) == first
    assert project.items(run).names.tolist() == [f"TS_{t:02d}/{i}" for t in range(3)
                                                 for i in range(5)]  # by task key, any executor
    project.run("test.emit_particles", params={"per_tomogram": 5, "shift_a": 10.0},
                name="emit", executor="inline")
    second = sorted(p.name for p in folder.glob("*.parquet"))
    assert len(second) == 3 and not set(second) & set(first)  # old tables removed
    particles = project.items(run)
    assert len(particles) == 15
    np.testing.assert_allclose(particles.positions_a, unshifted + 10.0, rtol=0, atol=1e-9)


def test_particles_stored_one_per_row_still_read(tmp_path):
    """A catalog written before tables (one row per particle) reads as one table."""
    _register_emitter()
    project = Project.init(tmp_path / "p")
    run = project.run("test.emit_particles", params={"per_tomogram": 4, "tomograms": 1},
                      executor="inline")
    output_set = project.output_set(run)
    old = _particles(3, tomograms=1, seed=5)
    project.catalog.commit_task(run.id, "legacy", "d", {output_set.id: [
        (p.name, "Particle", p.model_dump_json()) for p in old]}, [])
    table = set_particles(project.catalog, output_set.id)
    assert len(table) == 7 and list(table)[:3] == old  # one-row particles first
    assert project.catalog.count_items(output_set.id) == 7
