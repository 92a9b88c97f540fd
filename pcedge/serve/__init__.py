"""Serving the defense from NVIDIA Triton Inference Server: the model repository (``repository``), the server
models that run inside Triton's Python backend (``defense_model``, ``classifier_model``), the wire format both
sides share (``protocol``), a development server from the ``nvidia-pytriton`` wheel (``server``) and the gRPC
client that every command uses for ``triton://`` models (``client``)."""
