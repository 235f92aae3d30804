"""The hilfarm agent: runs on a device, dials out to the controller, measures models."""
