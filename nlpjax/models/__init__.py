"""Model definitions: Flax linen modules with frozen dataclass configs."""
