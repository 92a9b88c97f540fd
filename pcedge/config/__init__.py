"""A run described once: the validated models (:mod:`.models`) that ``pcedge run`` executes, filled from a YAML file
or from the command line (:mod:`.flags`), with secrets read where sites keep them (:mod:`.loader`)."""
