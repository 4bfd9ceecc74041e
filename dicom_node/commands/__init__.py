"""Command-line entry points: each module only parses arguments and wires the parts together."""
