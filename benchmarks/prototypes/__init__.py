"""Prototypes of changes proposed for modules this benchmark work does not own (state,
engine, planner, executor): measured here, next to the real code, and not wired in."""
