"""Models: presets (``presets``), parameter counts (``params``), the FSDP2 memory planner (``memory``),
loading (``loading``)."""
