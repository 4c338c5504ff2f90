"""One file per training method: its builder (``build(cfg, ctx) -> Trainable``)."""
