"""cnnforge.compat: each shim's private name is still there, its fallback gives the same result, and no
third-party private name is used anywhere else in cnnforge."""
from __future__ import annotations

import argparse
import ast
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cnnforge.compat import accelerate_internals, argparse_internals, torch_internals, versions
from cnnforge.errors import CnnforgeError

PACKAGE = Path(__file__).resolve().parents[1] / "cnnforge"
COMPAT = PACKAGE / "compat"
#: underscore names that are documented public API: os._exit, namedtuple's methods
PUBLIC_UNDERSCORE = {"_exit", "_asdict", "_replace", "_fields", "_make"}
#: calls whose string argument names a module or attribute
NAME_TAKERS = {"getLogger", "import_module", "getattr", "setattr", "hasattr", "delattr"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in PUBLIC_UNDERSCORE


def _own_private_names(trees: list[ast.Module]) -> set[str]:
    """Every private name cnnforge defines itself: functions, classes, module and class variables, self._x."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
    return {n for n in names if _private(n)}


def _third_party_privates(tree: ast.Module, own: set[str]) -> list[tuple[int, str]]:
    """(line, what) for each use of a private name that cnnforge does not define."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            found.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("cnnforge") and node.level == 0:
            parts = [*(node.module or "").split("."), *(a.name for a in node.names)]
            if any(map(_private, parts)):
                found.append((node.lineno, f"from {node.module} import {', '.join(a.name for a in node.names)}"))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if any(map(_private, a.name.split(".")))]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in NAME_TAKERS:
            strings = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            found += [(node.lineno, s) for s in strings if any(map(_private, re.split(r"\.", s)))]
    return found


def test_no_third_party_private_name_outside_compat() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    trees = {path: ast.parse(path.read_text(), str(path)) for path in files}
    own = _own_private_names(list(trees.values()))
    uses = [f"{path.relative_to(PACKAGE.parent)}:{line}: {what}" for path, tree in trees.items()
            if COMPAT not in path.parents for line, what in _third_party_privates(tree, own)]
    assert uses == [], "third-party private names belong in cnnforge/compat/:\n" + "\n".join(uses)


def test_the_scan_finds_private_names_of_other_packages() -> None:
    tree = ast.parse("import argparse\nfrom torch.utils._foreach_utils import f\nclass C:\n"
                     "    def __init__(self):\n        self._mine = 1\n    def m(self, p):\n"
                     "        return self._mine, p._actions, logging.getLogger('ray._private.x')\n")
    assert [what for _, what in _third_party_privates(tree, _own_private_names([tree]))] == [
        "from torch.utils._foreach_utils import f", "._actions", "ray._private.x"]


@pytest.fixture(params=[True, False], ids=["private", "fallback"])
def native(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Each torch shim twice: with torch's private name, and as with a torch outside the known range."""
    monkeypatch.setattr(torch_internals, "_native", lambda: request.param)
    return request.param


def test_torch_foreach_shims_match_per_tensor_arithmetic(native: bool) -> None:
    torch.manual_seed(0)
    a, b = [torch.randn(3), torch.randn(2, 2)], [torch.randn(3), torch.randn(2, 2)]
    lerped = [x.lerp(y, 0.25) for x, y in zip(a, b, strict=True)]
    torch_internals.foreach_lerp_(a, b, 0.25)
    assert all(torch.equal(x, y) for x, y in zip(a, lerped, strict=True))
    torch_internals.foreach_copy_(a, b)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    mixed = [[torch.zeros(1), torch.zeros(1, dtype=torch.float64), torch.ones(2)], [torch.ones(1)] * 3]
    groups = torch_internals.group_by_device_and_dtype(mixed)
    assert sorted((len(first), first[0].dtype) for first, _ in groups) == [(1, torch.float64), (2, torch.float32)]


@pytest.mark.parametrize("bad", [False, True])
def test_a_non_finite_gradient_is_found_on_the_device_and_its_fused_step_skipped(native: bool, bad: bool) -> None:
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, fused=True)
    model(torch.ones(1, 2)).sum().mul(float("nan") if bad else 1.0).backward()
    found, before = torch.zeros(()), model.weight.detach().clone()
    torch_internals.non_finite_to(found, [p.grad for p in model.parameters()], torch.ones(()))
    assert found.item() == float(bad)
    if torch_internals.skips_on_device(optimizer, found):
        optimizer.step()  # a fused step that reads found_inf: skipped on the device when found > 0
        assert torch.equal(model.weight, before) == bad
    else:
        assert not native  # only outside the known range does the caller skip it after a host read


def test_the_average_of_a_compiled_model_runs_its_own_weights() -> None:
    """torch's deep copy leaves out ``compile()``'s compiled call (``Module.__getstate__``); if it kept it, the
    average would evaluate the original model's weights (and compile them)."""
    from cnnforge.training.ema import WeightEMA

    model = nn.Linear(2, 1)
    model.compile()
    ema = WeightEMA(model, 0.9)
    with torch.no_grad():
        ema.module.weight.zero_(), ema.module.bias.zero_()
        assert ema.module(torch.ones(1, 2)).item() == 0.0


def test_outside_a_known_range_the_error_names_package_version_and_range() -> None:
    error = versions.unsupported("torch", ">=1,<2", "a feature")
    assert error.one_line() == (f"torch: a feature relies on internals of torch >=1,<2, and torch "
                                f"{versions.installed('torch')} is installed "
                                "(use torch>=1,<2, or report it to cnnforge)")


def test_a_second_accelerator_in_one_process_takes_its_own_precision() -> None:
    from accelerate import Accelerator

    accelerate_internals.reset_accelerator_state()  # what an earlier test's Accelerator left
    Accelerator(cpu=True, mixed_precision="bf16")
    accelerate_internals.reset_accelerator_state()
    assert Accelerator(cpu=True).mixed_precision == "no"


def test_outside_the_known_accelerate_range_a_second_run_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate import Accelerator

    accelerate_internals.reset_accelerator_state()  # what an earlier test's Accelerator left
    monkeypatch.setattr(accelerate_internals, "supported", lambda dist, spec: False)
    accelerate_internals.reset_accelerator_state()  # before any Accelerator: nothing to reset
    Accelerator(cpu=True)
    with pytest.raises(CnnforgeError, match=r"^accelerate: a second run in one process relies on internals"):
        accelerate_internals.reset_accelerator_state()


def test_argparse_actions_and_subcommands_are_listed() -> None:
    parser = argparse.ArgumentParser()
    option = parser.add_argument("--x")
    sub = parser.add_subparsers()
    child = sub.add_parser("a", aliases=["b"])
    assert option in argparse_internals.parser_actions(parser)
    assert argparse_internals.subparsers(parser) == [child]


def test_outside_the_known_python_range_listing_arguments_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(argparse_internals, "supported", lambda dist, spec: False)
    with pytest.raises(CnnforgeError, match=r"^python: listing a command's arguments relies on internals of python"):
        argparse_internals.parser_actions(argparse.ArgumentParser())


def test_the_version_ranges_hold_the_installed_versions() -> None:
    """The shims' private paths are the ones the rest of this suite runs; a new release shows up here first."""
    from cnnforge.compat import ray_internals

    for dist, spec in [("torch", torch_internals.TORCH), ("accelerate", accelerate_internals.ACCELERATE),
                       ("ray", ray_internals.RAY), (versions.PYTHON, argparse_internals.ARGPARSE)]:
        assert versions.supported(dist, spec), f"{dist} {versions.installed(dist)} is outside {spec}"


def test_a_restored_pbt_trial_continues_from_its_epoch() -> None:
    pytest.importorskip("ray")
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import PopulationBasedTraining

    from cnnforge.compat import ray_internals

    pbt = PopulationBasedTraining(time_attr="epoch", metric="val/acc", mode="max", perturbation_interval=2,
                                  hyperparam_mutations={"x": [1, 2]}, synch=True)
    trials = [Trial("t", config={"x": 1}, stub=True) for _ in range(2)]
    for trial in trials:
        pbt.on_trial_add(SimpleNamespace(search_alg=None), trial)
    ray_internals.restore_pbt_progress(pbt, trials[0], 5, 2)
    ray_internals.restore_pbt_progress(pbt, trials[1], 3, 2)
    assert (pbt._trial_state[trials[0]].last_perturbation_time, pbt._next_perturbation_sync) == (4, 4)


def test_the_ray_names_cnnforge_relies_on_exist() -> None:
    pytest.importorskip("ray")
    import importlib.util

    from ray.core.generated import gcs_service_pb2

    from cnnforge.compat import ray_internals

    assert importlib.util.find_spec(ray_internals.TOKEN_ADVICE_LOGGER) is not None
    service, method = ray_internals.CLUSTER_ID_RPC.strip("/").split("/")
    assert gcs_service_pb2.DESCRIPTOR.services_by_name[service.removeprefix("ray.rpc.")].methods_by_name[method]
    assert ray_internals.state_file_templates()[0] == "experiment_state-{}.json"  # the session is read from it


def test_outside_the_known_ray_range_the_fallbacks_hold(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("ray")
    from cnnforge.compat import ray_internals

    monkeypatch.setattr(ray_internals, "_native", lambda: False)
    assert ray_internals.refuses_without_token("127.0.0.1:1") is False  # left to ray.init
    with caplog.at_level(logging.WARNING, logger="cnnforge"):
        assert ray_internals.state_file_templates() == ()
    assert "is not archived" in caplog.text
    with pytest.raises(CnnforgeError, match=r"^ray: continuing a restored PBT sweep"):
        ray_internals.restore_pbt_progress(object(), object(), 3, 2)
