"""Registries, provenance and entry-point plugins (design.md §3), through the API and the CLI."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import cnnforge
from cnnforge.errors import ConfigError
from cnnforge.registry import Registry, builder_kwargs
from tests.conftest import cli, one_error_line
from tests.fake_dist import write_distribution

PROBE = '''
"""A plugin that registers one tiny model, imported only through its entry point."""
import cnnforge


@cnnforge.register_model
def probe_net(*, num_classes, in_channels, width: int = 8):
    """Probe network: one conv and a linear head."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, num_classes))
'''


def _fn(module: str, name: str = "builder"):
    def builder(*, num_classes: int, in_channels: int, width: int = 4) -> str:
        """A builder defined in some package."""
        return f"{num_classes}-{in_channels}-{width}"

    builder.__module__ = module
    builder.__name__ = name
    return builder


def test_decorators_bare_and_named() -> None:
    reg = Registry("models")
    reg.decorator(_fn("pkg_a.nets", "alpha"))
    reg.decorator("beta")(_fn("pkg_a.nets"))
    assert {"alpha", "beta"} <= set(reg.names())
    entry = reg.get("beta")
    assert (entry.package, entry.summary) == ("pkg_a", "A builder defined in some package.")


def test_collision_names_both_packages() -> None:
    reg = Registry("models")
    reg.register("net", _fn("pkg_a.nets"))
    with pytest.raises(ConfigError) as err:
        reg.register("net", _fn("pkg_b.nets"))
    assert "pkg_a" in str(err.value) and "pkg_b" in str(err.value)


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'vgg_nb'.*did you mean vgg_bn"):
        cnnforge.registry.models.get("vgg_nb")


def test_builder_kwargs_pass_declared_context_and_check_params() -> None:
    reg = Registry("models")
    reg.register("net", _fn("pkg_a.nets"))
    entry = reg.get("net")
    context = {"num_classes": 3, "in_channels": 1, "image_size": (8, 8)}
    assert builder_kwargs(entry, {"width": 2}, context=context, where="r.yaml: model") == {
        "num_classes": 3, "in_channels": 1, "width": 2}  # image_size is not declared, so not passed
    with pytest.raises(ConfigError, match=r"r.yaml: model.widht: unknown parameter .*did you mean width"):
        builder_kwargs(entry, {"widht": 2}, context=context, where="r.yaml: model")
    with pytest.raises(ConfigError, match=r"r.yaml: model.width: .*integer"):
        builder_kwargs(entry, {"width": "wide"}, context=context, where="r.yaml: model")


def test_build_model_api_exact_counts() -> None:
    model = cnnforge.build_model("vgg_bn", num_classes=10, in_channels=3, image_size=(32, 32))
    assert sum(p.numel() for p in model.parameters()) == 205_274
    model = cnnforge.build_model("convnet", num_classes=10, in_channels=1, image_size=(28, 28))
    assert sum(p.numel() for p in model.parameters()) == 6_474


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    write_distribution(site, "cnnforge-probe", "1.2.3", "cnnforge_probe", PROBE)
    write_distribution(site, "cnnforge-broken", "0.1", "cnnforge_broken", "raise RuntimeError('boom')\n")
    write_distribution(site, "cnnforge-clash", "2.0", "cnnforge_clash", '''
        import cnnforge

        @cnnforge.register_model
        def convnet(*, num_classes, in_channels):
            """Clashes with the built-in convnet."""
    ''')
    return site


def _env(site: Path, **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), **extra}


def test_plugin_listed_with_provenance_and_failures_isolated(plugin_site: Path) -> None:
    proc = cli("list", "models", env=_env(plugin_site))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("probe_net"))
    assert "cnnforge-probe" in row and "1.2.3" in row and "Probe network" in row
    assert any(line.startswith("convnet") and " cnnforge " in f"{line} " for line in proc.stdout.splitlines())
    # the broken and the clashing plugin are reported with their package names; the others still load
    assert "cnnforge-broken" in proc.stderr and "boom" in proc.stderr
    assert "cnnforge-clash" in proc.stderr and "registered twice" in proc.stderr
    plugins = cli("list", "plugins", env=_env(plugin_site))
    assert "cnnforge-probe" in plugins.stdout and "cnnforge-broken" in plugins.stdout


def test_recipe_names_plugin_model_without_import(plugin_site: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "probe.yaml"
    recipe.write_text("data: {name: digits, num_workers: 0}\nmodel: {name: probe_net, width: 4}\n"
                      f"train: {{epochs: 1, out_dir: {tmp_path / 'runs'}}}\n")
    proc = cli("run", str(recipe), env=_env(plugin_site, CNNFORGE_PLUGINS="cnnforge-probe"))
    assert proc.returncode == 0, proc.stderr
    assert "cnnforge-broken" not in proc.stderr  # only the selected entry point was loaded
    manifest = next((tmp_path / "runs").rglob("manifest.json")).read_text()
    assert '"cnnforge-probe": "1.2.3"' in manifest


def test_plugins_disabled_by_env(plugin_site: Path) -> None:
    proc = cli("check", "recipes/digits_convnet.yaml", "model.name=probe_net",
               env=_env(plugin_site, CNNFORGE_PLUGINS="none"))
    assert proc.returncode == 2
    assert "model.name: unknown model 'probe_net'" in one_error_line(proc)
