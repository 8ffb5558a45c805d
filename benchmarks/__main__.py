"""Run every benchmark module (``python -m benchmarks [NAME...]``)."""

import importlib
import pkgutil
import sys
import traceback

import benchmarks


def main() -> int:
    wanted = set(sys.argv[1:])
    failures = 0
    for module_info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if not module_info.name.startswith("bench_"):
            continue
        if wanted and module_info.name not in wanted and module_info.name[6:] not in wanted:
            continue
        print(f"\n=== {module_info.name} ===", flush=True)
        try:
            importlib.import_module(f"benchmarks.{module_info.name}").main()
        except Exception:  # one broken benchmark must not hide the others
            traceback.print_exc()
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
