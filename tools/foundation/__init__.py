"""Foundation-model backends (GroundingDINO, OWLv2, SAM/SAM 2, Depth Anything, captioners, diffusers inpainting).

They load weights from a local folder or the local hub cache (never downloaded unless `allow_download`), once,
onto the configured device, through `cielr_agent.tools.model_manager`. Install them with the `full` extra.
"""
