"""``pcedge run`` as a site runs it: a configuration (:mod:`pcedge.config`) made into streams and sinks
(:mod:`.specs`), executed with live reloads (:mod:`.reload`) and systemd's notify protocol and watchdog
(:mod:`.systemd`). Thin on purpose: the loop, the sinks and the model do the work."""
