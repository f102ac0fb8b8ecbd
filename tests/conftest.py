"""Settings for every layer of the suite.

Hypothesis's timing checks are off: these machines are shared (CI runs qemu guests
beside the unit tests on 2 cores), so how long one input takes to draw or to run says
nothing about the code. Seen: `too_slow` failed test_bad_inputs.py's override-body test
("1 valid input after 1.69 s") while a guest booted. What the properties assert is kept.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")
