"""Training: settings (``settings``), the FSDP2 Train V2 loop (``loop``, ``fsdp``, ``data``), stages
(``stage.StageSpec`` / ``run_stage``), SFT strategies as stages (``strategies``), storage helpers."""
