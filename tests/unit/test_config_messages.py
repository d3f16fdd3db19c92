"""Issue 17.7: config errors a technician can act on (no dict dumps, no empty values,
a suggestion for a mistyped key)."""

from __future__ import annotations

from agent.cli.main import main as agent_main


def test_unknown_camera_names_the_camera_not_the_whole_config(write_config, clean_env, capsys):
    path = write_config(
        '[[cameras]]\nname = "door"\nsource = "v4l2:/dev/video0"\n'
        '[[models]]\nslot = "detector"\npath = "/m.tflite"\ncameras = ["gate"]\n'
    )
    assert agent_main(["validate-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: (top level): model slot 'detector' names unknown cameras: gate\n" in err
    assert "{" not in err
    assert "Value error" not in err


def test_toml_syntax_error_has_no_empty_value(write_config, clean_env, capsys):
    path = write_config('[device]\nid = "cam-1\n')
    assert agent_main(["validate-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "(syntax)" in err
    assert "(got )" not in err


def test_unknown_keys_get_a_suggestion(write_config, clean_env, capsys):
    path = write_config(
        '[mqtt]\nurll = "mqtt://x:1883"\n[[cameras]]\nname = "door"\nsource = "v4l2:/dev/video0"'
        "\nfsp = 5\n[telemetry]\nzzz = 1\n"
    )
    assert agent_main(["validate-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "mqtt.urll: unknown key 'urll'; did you mean 'url'?" in err
    assert "cameras[0].fsp: unknown key 'fsp'; did you mean 'fps'?" in err
    assert "telemetry.zzz: unknown key 'zzz' (got 1)" in err
