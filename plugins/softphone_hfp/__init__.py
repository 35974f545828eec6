"""Plugin being built (issue 13), not yet registered as an entry point: Bluetooth HFP/HSP headsets."""
