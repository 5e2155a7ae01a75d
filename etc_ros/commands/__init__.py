"""The robot-side operator commands (`etc-robot`, also part of `etc-vla`): one module per subcommand exposing
`register(parser)`. Torch-free: they run in the robot image, which has no etc_training."""
