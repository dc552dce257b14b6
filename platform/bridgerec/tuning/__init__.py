"""Ray Tune sweeps over Train V2: search spaces (:mod:`.space`) and the Tuner (:mod:`.sweep`).

The trial function itself (train, evaluate, log a child run) is orchestration and lives in
:mod:`bridgerec.workflows.tune`; this package only knows Tune.
"""

from bridgerec._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "SweepSpec": "space",
    "load_space": "space",
    "build_tuner": "sweep",
    "restore_tuner": "sweep",
    "check_space": "sweep",
    "max_concurrent": "sweep",
    "sweep_path": "sweep",
    "trial_run_name": "sweep",
})
