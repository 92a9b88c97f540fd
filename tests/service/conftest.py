"""The site's real components (a Mosquitto broker, the alarm clip) serve the service's tests too."""

from tests.site.conftest import alarm_clip, broker  # noqa: F401 - fixtures, found by name
