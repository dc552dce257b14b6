"""The placement groups of trials Tune stops: Ray Train's cleaner removes them only through Ray's
State API (ray-project/ray#54305), so the Ray bridgerec starts has a dashboard and tells its
workers where it is; a sweep counts and removes what is left."""

from __future__ import annotations


def test_local_ray_answers_the_state_api_as_its_workers_ask_it(ray_session):
    from bridgerec.runtime import local_cores, state_api_reachable

    assert local_cores(), "the suite's Ray is started by bridgerec.runtime.init_ray"
    assert state_api_reachable()

    @ray_session.remote(num_cpus=0)
    def worker_view() -> tuple:
        import os

        from ray.util.state import list_actors

        # what Train's PlacementGroupCleaner does in a worker: no address given
        return os.environ.get("RAY_API_SERVER_ADDRESS"), len(list_actors(limit=5, raise_on_missing_output=False)) >= 0

    address, answered = ray_session.get(worker_view.remote())
    assert address and address.startswith("http://127.0.0.1:") and answered


def test_groups_left_after_a_sweep_are_counted_and_removed(ray_session):
    from ray.util import placement_group_table
    from ray.util.placement_group import placement_group

    from bridgerec.workflows.tune import _left_placement_groups

    assert _left_placement_groups(print, wait_s=0) == 0
    pg = placement_group([{"CPU": 1}, {"CPU": 1}])
    ray_session.get(pg.ready(), timeout=60)
    lines = []
    assert _left_placement_groups(lines.append, wait_s=1) == 1
    assert "1 placement group(s)" in lines[0]
    assert placement_group_table(pg)["state"] == "REMOVED"
    assert _left_placement_groups(print, wait_s=0) == 0
