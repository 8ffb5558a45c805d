"""`tomoweave simulate PRESET OUTDIR`: simulated tilt series with ground truth, no project needed."""

from __future__ import annotations

from pathlib import Path

import typer

from tomoweave.cli.common import JsonOption, handle_errors, parse_pairs, parse_value, print_json


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_command)


@handle_errors
def simulate_command(
    preset: str = typer.Argument(..., help="tiny, test or demo"),
    out_dir: Path = typer.Argument(..., help="folder to write stacks, .mdoc and truth/ into"),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same data)"),
    n_series: int | None = typer.Option(None, "--n-series", help="number of tilt series"),
    settings: list[str] = typer.Option(None, "--set", help="override a setting, KEY=VALUE "
                                       "(e.g. movies_on=true, pixel_size_a=8)"),
    json_output: bool = JsonOption,
) -> None:
    """Simulate tilt series (stacks in acquisition order, SerialEM .mdoc, optional movies) with
    their ground truth (alignment, CTF, particles, beads, noise-free volume)."""
    from tomoweave.sim import simulate_dataset

    overrides = {key: parse_value(value) for key, value in parse_pairs(settings, "--set").items()}
    if n_series is not None:
        overrides["n_series"] = n_series
    data = simulate_dataset(out_dir, preset=preset, seed=seed, **overrides)
    report = {
        "out_dir": str(data.out_dir), "preset": preset, "seed": seed,
        "series": [{"name": s.name, "stack": str(s.stack_path), "mdoc": str(s.mdoc_path),
                    "truth": str(s.truth_path), "frames": [str(p) for p in s.frame_paths]}
                   for s in data.series],
    }
    if json_output:
        print_json(report)
        return
    for series in report["series"]:
        typer.echo(f"{series['name']}: {series['stack']}  {series['mdoc']}  truth {series['truth']}")
