"""Device profiles and example constraint sets, shipped with the agent."""
