"""Models: presets (``presets``), the FSDP2 memory planner (``memory``), loading (``loading``), ``doitray plan``."""
