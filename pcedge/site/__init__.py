"""The site hears and sees its cameras: alarm episodes over MQTT and webhooks, Prometheus metrics, a live web view,
and episodes on disk. Each is one more sink of the stream loop (:class:`pcedge.video.Sink`); none can slow or stop
the defense: each has a bounded queue or reads what the loop already keeps, drops its oldest work when it falls
behind (counted as ``pcedge_events_dropped_total``), and the run's exit code never depends on one.

``episodes`` (one id per alarm episode, the same on every channel), ``queued`` (the bounded queue and worker the
publishers share), ``mqtt``, ``webhooks``, ``metrics``, ``web``, ``disk``, ``endpoints`` (flag values checked at
start, credentials never shown), ``build`` (the sinks ``pcedge run``'s flags ask for).
"""
