"""The consent decision point (pure) and the consent state it decides on."""
