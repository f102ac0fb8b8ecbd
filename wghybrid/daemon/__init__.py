"""The daemon (`wghybrid run`), by job: `service` (the Daemon: overrides, snapshot, the tick
loop's cadence), `tick` (one tick: sample, plan, apply), `serve` (start and stop: data
plane, locks, listeners, signals), `config` (options -> RunConfig), `notify` (systemd),
`persist` (the simulated gateway across restarts), `api/` (HTTP, against a Protocol, not
the Daemon class), `state`, `metrics`, `events`, `explain`.
"""
