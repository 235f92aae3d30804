"""The hilfarm controller: stores artifacts and results, schedules jobs onto agents."""
