"""The daemon starts the pipeline on the update store's current model, not the provisioned one."""

from __future__ import annotations

from agent.config.root import AgentConfig
from agent.daemon.pipelines import installed_model_paths
from tests.support.update_fleet import Fleet, install_bundle, make_installer


def test_installed_update_wins_over_provisioned_path(tmp_path, short_range_model):
    state = tmp_path / "state"
    config = AgentConfig.model_validate(
        {
            "storage": {"state_dir": str(state)},
            "models": [
                {"slot": "detector", "path": str(short_range_model)},
                {"slot": "other", "path": str(short_range_model)},
            ],
        }
    )
    assert installed_model_paths(config, state) == {}

    fleet = Fleet(tmp_path / "fleet", short_range_model)
    result = install_bundle(make_installer(state, fleet), fleet.bundle())
    assert result.outcome == "committed"

    paths = installed_model_paths(config, state)
    assert set(paths) == {"detector"}  # "other" has no update: the pipeline uses its path
    installed = paths["detector"]
    assert installed.is_relative_to(state / "models" / "detector")
    assert installed.read_bytes() == short_range_model.read_bytes()
