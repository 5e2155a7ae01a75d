"""The action heads of the VLA, one module per head.

    base.py        ActionHead protocol, BackboneOutputs, lm_loss, prefix conditioning of the continuous heads
    token.py       "tokens": action tokens as next tokens, greedy KV-cache decoding (greedy_decode)
    diffusion.py   "diffusion": noise schedule, denoiser, DDIM / one-step sampling
    regression.py  "regression": the whole chunk in one pass, L1 loss, optional grounding read-out
    hybrid.py      "both": tokens + diffusion on one prefix; diffusion_part(head)
    factory.py     the registry: make_action_head(name, processor, hidden_size, config), register_action_head

Import the submodules directly (`from etc_training.models.heads.factory import make_action_head`); this package
imports nothing itself.
"""
