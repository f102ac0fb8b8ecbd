"""The simulated gateway: a calibrated CPU model, traffic scenarios, an oracle and the
simulated DataPlane backend. Every modelling assumption: docs/sim-model.md."""

from wghybrid.sim.backend import Faults, SimDataPlane
from wghybrid.sim.gateway import SimGateway
from wghybrid.sim.oracle import OracleResult, oracle
from wghybrid.sim.pipeline import Evaluation, GatewayModel, ModelParams, default_cores
from wghybrid.sim.scenario import (
    Scenario,
    ScenarioError,
    TunnelSpec,
    list_scenarios,
    load_scenario,
    parse_scenario,
)

__all__ = [
    "Evaluation",
    "Faults",
    "GatewayModel",
    "ModelParams",
    "OracleResult",
    "Scenario",
    "ScenarioError",
    "SimDataPlane",
    "SimGateway",
    "TunnelSpec",
    "default_cores",
    "list_scenarios",
    "load_scenario",
    "oracle",
    "parse_scenario",
]
