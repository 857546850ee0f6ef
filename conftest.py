"""Settings shared by every test folder of the repository."""

from hypothesis import HealthCheck, settings

# Machines running the suite are shared and noisy: property tests must not fail on timing.
settings.register_profile(
    "beds", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("beds")
