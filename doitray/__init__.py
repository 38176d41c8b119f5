"""doitray: instruction-tuning scaling studies on Ray (Data, Train + FSDP2, Tune, Serve + vLLM)."""
__version__ = "0.1.0"
