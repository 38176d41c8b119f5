"""Models: presets (``presets``), the FSDP2 memory planner (``planner``), loading (``loading``), ``doitray plan``."""
