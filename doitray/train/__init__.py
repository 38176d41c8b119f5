"""Training: settings (``settings``), the FSDP2 Train V2 worker loop (``loop``: ``setup``, ``step``,
``checkpoint``, over ``fsdp`` and ``data``), one stage as a Train run (``stage.StageSpec`` / ``run_stage``),
storage helpers."""
