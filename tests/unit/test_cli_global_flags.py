"""--name anywhere before `--`, as kubectl takes its global flags (`kubewire up --name x`)."""

from __future__ import annotations

from kubewire.cli.main import global_flags_first


def test_name_moves_to_the_front_wherever_it_is_written() -> None:
    assert global_flags_first(["up", "--name", "x", "--no-demo"]) == ["--name", "x", "up", "--no-demo"]
    assert global_flags_first(["down", "--name=x"]) == ["--name=x", "down"]
    assert global_flags_first(["--name", "x", "get", "pods"]) == ["--name", "x", "get", "pods"]


def test_what_follows_a_double_dash_is_the_pods_command_line() -> None:
    argv = ["exec", "client", "--name", "c1", "--", "tool", "--name", "y"]
    assert global_flags_first(argv) == ["--name", "c1", "exec", "client", "--", "tool", "--name", "y"]
