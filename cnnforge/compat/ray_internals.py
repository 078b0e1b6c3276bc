"""Ray internals a sweep relies on: PBT's per-trial state, the experiment state's file names, the GCS's RPC.

Ray offers no public way to tell a restored PBT scheduler where its trials stand, to name the files of
one experiment save, or to ask a cluster whether it wants a token without ``ray.init``'s ~20 s of
retries. Outside the known Ray range each falls back: the token check is left to ``ray.init``, the
state archive is not kept (a rerun restores from Ray's own copy), a restored PBT sweep stops with
one line.
"""
from __future__ import annotations

import logging
from typing import Any

from cnnforge.compat.versions import installed, supported, unsupported

#: the Ray releases these were read from (2.60) and checked against
RAY = ">=2.40,<2.61"
#: the logger of Ray's advice about token authentication, which a cluster started by cnnforge does not need
TOKEN_ADVICE_LOGGER = "ray._private.authentication.authentication_token_setup"
#: the GCS method that answers first on a cluster (an empty request), and refuses a caller without a token
CLUSTER_ID_RPC = "/ray.rpc.NodeInfoGcsService/GetClusterId"

log = logging.getLogger("cnnforge")


def _native() -> bool:
    return supported("ray", RAY)


def restore_pbt_progress(scheduler: Any, trial: Any, epoch: int, interval: int) -> None:
    """Tell a ``PopulationBasedTraining`` that restored ``trial`` stands at ``epoch``, and move its next
    synchronisation to the first perturbation point after the slowest trial."""
    if not _native():
        raise unsupported("ray", RAY, "continuing a restored PBT sweep (tune.scheduler: pbt)")
    state = scheduler._trial_state[trial]
    state.last_train_time, state.last_perturbation_time = epoch, epoch - epoch % interval
    slowest = min(s.last_train_time for s in scheduler._trial_state.values())
    scheduler._next_perturbation_sync = (slowest // interval + 1) * interval


def quiet_token_advice() -> None:
    """Silence Ray's advice to set up token authentication (for a cluster this process starts itself)."""
    if _native():
        logging.getLogger(TOKEN_ADVICE_LOGGER).setLevel(logging.ERROR)


def refuses_without_token(address: str) -> bool:
    """Whether the cluster at HOST:PORT turns away a caller without a token: one unauthenticated GCS call,
    answered in milliseconds. False outside the known range (``ray.init`` then finds out itself)."""
    if not _native():
        return False
    import grpc

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(CLUSTER_ID_RPC)
        try:
            call(b"", timeout=5.0)  # an empty GetClusterIdRequest
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


def state_file_templates() -> tuple[str, ...]:
    """The files of one save of a Ray Tune experiment, ``{}`` standing for the save's session, the experiment
    state first; empty outside the known range (a warning says the state archive is not kept)."""
    if not _native():
        log.warning("ray %s: its experiment state is not archived (cnnforge knows ray%s); a driver killed "
                    "while Ray copies it may not resume", installed("ray"), RAY)
        return ()
    from ray.tune.callback import CallbackList
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.search_generator import SearchGenerator
    from ray.tune.search.searcher import Searcher

    return tuple(cls.CKPT_FILE_TMPL for cls in (TuneController, SearchGenerator, Searcher,
                                                BasicVariantGenerator, CallbackList))
