"""A run described once: the validated models (:mod:`.models`) that ``pcedge run`` executes, filled from a YAML file
(:mod:`.loader`: read whole once it stands still; :mod:`.document`: YAML, variables, secrets; :mod:`.issues`: every
error with its key and line) or from the command line (:mod:`.flags`: the one flag<->key table), and written back as
a file (:mod:`.render`), a JSON schema for editors (:mod:`.schema`) or a commented starter (:mod:`.starter`).
:mod:`.typed` (``--config`` on the command line) imports neither pydantic nor PyYAML: building the command line never
needs them."""
